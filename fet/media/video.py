"""Read video (a container file, its bytes, or a folder of frame images) on a fixed frame-rate
timeline, in segments, so hours of footage never sit in memory at once.

decord does the decoding (fast random access); when decord cannot open a file, PyAV/FFmpeg is tried,
which reads more codecs and containers. Frames are picked by timestamp onto the target rate (25 fps:
what HDTF and SyncNet assume), so a 30 fps or 29.97 fps input becomes a true 25 fps clip rather than
a sped-up one, and a phone's variable frame rate keeps each frame at its own time, in step with the
audio.

Frames come upright as players show them: a phone stores the pixels as its sensor lay and marks the
turn in the container's display matrix. decord turns them itself; PyAV does not, so its frames are
turned here. (decord garbles frames of some small widths, 48 for one: those videos go to FFmpeg.)

The timeline starts at the first frame. A container's audio track may start at another time (a clip cut
from a stream, a recorder that starts one track late): ``VideoInfo.audio_offset`` says by how much, so
the audio can be put on the same clock (``fet.audio.load.align_start``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fet import storage
from fet.images import IMAGE_SUFFIXES, load_image


class VideoError(ValueError):
    """A video that cannot be used. ``reason`` is a short code for reject tables."""

    def __init__(self, message: str, reason: str = "corrupt") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class VideoInfo:
    num_frames: int  # in the source
    fps: float  # of the source
    width: int
    height: int
    decoder: str  # decord | pyav | images
    times: np.ndarray | None = None  # when each frame starts, seconds after the first; None: every 1/fps
    audio_offset: float = 0.0  # when the container's audio starts, seconds after the first frame (< 0: before)

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps


def timeline(info: VideoInfo, fps: float) -> np.ndarray:
    """Source frame index shown at each tick of a ``fps`` timeline over the whole video, (T,): the last
    frame to start by the tick's time."""
    T = int(np.floor(info.seconds * fps + 1e-6))
    if info.times is None:
        return np.minimum(np.floor(np.arange(T) * info.fps / fps + 1e-6).astype(np.int64), info.num_frames - 1)
    shown = np.searchsorted(info.times, np.arange(T) / fps + 1e-3, side="right") - 1  # 1 ms: timestamp rounding
    return np.clip(shown, 0, info.num_frames - 1).astype(np.int64)


def audio_offset(container: Any) -> float:
    """When the first audio stream of an open PyAV ``container`` starts, in seconds after its first video
    stream starts: what a player waits before the sound (< 0: the sound begins before the picture). 0
    when the container lacks either stream or a start time."""
    if not container.streams.video or not container.streams.audio:
        return 0.0
    video, audio = container.streams.video[0], container.streams.audio[0]
    if video.start_time is None or audio.start_time is None:
        return 0.0
    return float(audio.start_time * audio.time_base - video.start_time * video.time_base)


def frame_times(starts: list[float | None] | np.ndarray) -> np.ndarray | None:
    """Each frame's start time in seconds → the same after the first frame; None when a time is missing
    or they do not increase (the timeline then falls back to the average rate)."""
    if len(starts) == 0 or any(t is None for t in starts):
        return None
    times = np.asarray(starts, np.float64) - float(starts[0])
    return times if bool(np.all(np.diff(times) > 0)) else None


class VideoReader:
    """Open ``source`` (path, ``s3://`` URI, bytes, or a folder of frame images with ``fps``)."""

    def __init__(self, source: str | os.PathLike | bytes, name: str | None = None, fps: float | None = None) -> None:
        self.name = name or (str(source) if not isinstance(source, bytes | bytearray) else "video")
        self._frames: list[str] | None = None
        self._decord = None
        self._data: bytes | str | None = None
        if not isinstance(source, bytes | bytearray) and _is_frame_folder(str(source)):
            self._open_folder(str(source), fps or 25.0)
            return
        self._data = self._load(source)
        self._turns = 0  # quarter turns that show FFmpeg's frames upright (decord's need none)
        self._cursor: _Cursor | None = None  # FFmpeg's place in the video, for reading it in order
        try:
            self._open_decord()
        except VideoError:
            raise
        except Exception as decord_error:  # decord cannot read every codec/container; FFmpeg may
            self._open_pyav(decord_error)

    def _load(self, source: str | os.PathLike | bytes) -> bytes | str:
        if isinstance(source, bytes | bytearray):
            data: bytes | str = bytes(source)
        elif storage.is_s3(source):
            data = storage.read_bytes(source)
        else:
            path = Path(source)
            if not path.is_file():
                raise VideoError(f"{self.name}: no such video file", "missing")
            data = str(path)
        size = len(data) if isinstance(data, bytes) else Path(data).stat().st_size
        if size == 0:
            raise VideoError(f"{self.name}: the file is empty (0 bytes)", "empty_file")
        return data

    def _stream(self):
        return io.BytesIO(self._data) if isinstance(self._data, bytes) else self._data

    def _open_decord(self) -> None:
        import decord

        vr = decord.VideoReader(self._stream(), ctx=decord.cpu(0), num_threads=1)
        if len(vr) == 0:
            raise RuntimeError("no frames")
        h, w, channels = vr[0].shape
        if channels != 3:  # some small widths: it takes the padded row length for more channels
            raise RuntimeError(f"decord gives frames of {channels} channels")
        vr.seek(0)
        times = frame_times(vr.get_frame_timestamp(range(len(vr)))[:, 0])  # decord's start at 0: no offsets
        self.info = VideoInfo(len(vr), float(vr.get_avg_fps()), int(w), int(h), "decord", times, self._probe_offset())
        self._decord = vr

    def _probe_offset(self) -> float:
        """``audio_offset`` from the container's header (FFmpeg reads it without decoding); 0 where it
        cannot tell."""
        import av

        try:
            with av.open(self._stream()) as container:
                return audio_offset(container)
        except Exception:  # decord read the frames; a header FFmpeg cannot parse gives them no offset
            return 0.0

    def _open_pyav(self, decord_error: Exception) -> None:
        import av

        try:
            with av.open(self._stream()) as container:
                if not container.streams.video:
                    raise VideoError(f"{self.name}: the file has no video stream", "no_video")
                stream = container.streams.video[0]
                fps = float(stream.average_rate or stream.guessed_rate or 0)
                offset = audio_offset(container)
                frames = container.decode(stream)
                first = next(frames, None)
                starts = [] if first is None else [first.time, *(frame.time for frame in frames)]
        except VideoError:
            raise
        except Exception as e:
            reason = "unreadable_codec" if "codec" in str(e).lower() or "decoder" in str(e).lower() else "corrupt"
            raise VideoError(
                f"{self.name}: not a readable video (decord: {_short(decord_error)}; FFmpeg: {_short(e)})", reason
            ) from e
        if not starts or fps <= 0:
            raise VideoError(f"{self.name}: the video stream holds no decodable frames", "corrupt")
        # the display matrix's turn: FFmpeg gives degrees counter-clockwise, the way np.rot90 turns
        self._turns = round(first.rotation / 90) % 4
        w, h = stream.codec_context.width, stream.codec_context.height
        size = (h, w) if self._turns % 2 else (w, h)
        self.info = VideoInfo(len(starts), fps, *size, "pyav", frame_times(starts), offset)

    def _open_folder(self, folder: str, fps: float) -> None:
        files = [f for f in storage.list_files(folder) if f.lower().endswith(IMAGE_SUFFIXES)]
        files = [f for f in files if f.rsplit("/", 1)[0] == folder.rstrip("/")]
        if not files:
            raise VideoError(f"{self.name}: no frame images in the folder", "empty_file")
        first = np.asarray(load_image(files[0]))
        self._frames = files
        self.info = VideoInfo(len(files), fps, first.shape[1], first.shape[0], "images")

    def frames(self, indices: np.ndarray) -> np.ndarray:
        """Source frames at ``indices`` (ascending), (n, H, W, 3) uint8."""
        indices = np.asarray(indices, dtype=np.int64)
        try:
            if self._decord is not None:
                return self._decord.get_batch(indices.tolist()).asnumpy()
            if self._frames is not None:
                return np.stack([_decode_frame(self._frames[i], self.info) for i in indices])
            frames = self._pyav_frames(indices)
            return np.ascontiguousarray(np.rot90(frames, self._turns, axes=(1, 2))) if self._turns else frames
        except VideoError:
            raise
        except Exception as e:
            raise VideoError(f"{self.name}: decoding failed at frames {indices[0]}–{indices[-1]}: {_short(e)}") from e

    def _pyav_frames(self, indices: np.ndarray) -> np.ndarray:
        """Decode on from where the last call stopped (segments come in order), so a whole video is
        decoded once; asking for an earlier frame starts again from the first."""
        import av

        if self._cursor is None or self._cursor.next_index > int(indices.min()):
            if self._cursor is not None:
                self._cursor.container.close()
            container = av.open(self._stream())
            self._cursor = _Cursor(container, container.decode(video=0))
        cursor, wanted, last = self._cursor, {int(i): None for i in indices}, int(indices.max())
        keep = False
        try:
            while cursor.next_index <= last:
                frame = next(cursor.frames, None)
                if frame is None:
                    raise VideoError(f"{self.name}: the video ends at frame {cursor.next_index}, before frame {last}")
                if cursor.next_index in wanted:
                    wanted[cursor.next_index] = frame.to_ndarray(format="rgb24")
                cursor.next_index += 1
            keep = cursor.next_index < self.info.num_frames
        finally:  # closed at the end, and after a failed decode (not resumed: the next call starts again)
            if not keep:
                cursor.container.close()
                self._cursor = None
        return np.stack([wanted[int(i)] for i in indices])

    def segments(self, fps: float, segment_frames: int, min_frames: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """(first tick, frames (n, H, W, 3)) for consecutive segments of the ``fps`` timeline."""
        ticks = timeline(self.info, fps)
        starts = segment_starts(len(ticks), segment_frames, min_frames)
        for k, start in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else len(ticks)
            yield start, self.frames(ticks[start:end])


@dataclass
class _Cursor:
    """An open FFmpeg decode of a video and the index of the next frame it gives."""

    container: Any
    frames: Iterator[Any]
    next_index: int = 0


def segment_starts(num_ticks: int, segment_frames: int, min_frames: int = 1) -> list[int]:
    """Start ticks of consecutive segments of at most ``segment_frames``; a last piece shorter than
    ``min_frames`` joins the segment before it."""
    starts = list(range(0, num_ticks, segment_frames))
    if len(starts) > 1 and num_ticks - starts[-1] < min_frames:
        starts.pop()
    return starts


def _is_frame_folder(source: str) -> bool:
    if storage.is_s3(source):
        return not Path(source).suffix
    return Path(source).is_dir()


def _decode_frame(uri: str, info: VideoInfo) -> np.ndarray:
    frame = np.asarray(load_image(uri))
    if frame.shape[:2] != (info.height, info.width):
        raise VideoError(f"{uri}: frame is {frame.shape[1]}x{frame.shape[0]}, the folder's first is "
                         f"{info.width}x{info.height}", "corrupt")  # fmt: skip
    return frame


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:160]
