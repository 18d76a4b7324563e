"""Read video (a container file, its bytes, or a folder of frame images) on a fixed frame-rate
timeline, in segments, so hours of footage never sit in memory at once.

decord does the decoding (fast random access); when decord cannot open a file, PyAV/FFmpeg is tried,
which reads more codecs and containers. Frames are picked by timestamp onto the target rate (25 fps:
what HDTF and SyncNet assume), so a 30 fps or 29.97 fps input becomes a true 25 fps clip rather than
a sped-up one.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps


def timeline(info: VideoInfo, fps: float) -> np.ndarray:
    """Source frame index shown at each tick of a ``fps`` timeline over the whole video, (T,)."""
    T = int(np.floor(info.seconds * fps + 1e-6))
    return np.minimum(np.floor(np.arange(T) * info.fps / fps + 1e-6).astype(np.int64), info.num_frames - 1)


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
        h, w = vr[0].shape[:2]
        vr.seek(0)
        self.info = VideoInfo(len(vr), float(vr.get_avg_fps()), int(w), int(h), "decord")
        self._decord = vr

    def _open_pyav(self, decord_error: Exception) -> None:
        import av

        try:
            with av.open(self._stream()) as container:
                if not container.streams.video:
                    raise VideoError(f"{self.name}: the file has no video stream", "no_video")
                stream = container.streams.video[0]
                fps = float(stream.average_rate or stream.guessed_rate or 0)
                count = sum(1 for _ in container.decode(stream))
        except VideoError:
            raise
        except Exception as e:
            reason = "unreadable_codec" if "codec" in str(e).lower() or "decoder" in str(e).lower() else "corrupt"
            raise VideoError(
                f"{self.name}: not a readable video (decord: {_short(decord_error)}; FFmpeg: {_short(e)})", reason
            ) from e
        if count == 0 or fps <= 0:
            raise VideoError(f"{self.name}: the video stream holds no decodable frames", "corrupt")
        self.info = VideoInfo(count, fps, stream.codec_context.width, stream.codec_context.height, "pyav")

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
            return self._pyav_frames(indices)
        except VideoError:
            raise
        except Exception as e:
            raise VideoError(f"{self.name}: decoding failed at frames {indices[0]}–{indices[-1]}: {_short(e)}") from e

    def _pyav_frames(self, indices: np.ndarray) -> np.ndarray:
        import av

        wanted = {int(i): [] for i in indices}
        last = int(indices.max())
        with av.open(self._stream()) as container:
            for n, frame in enumerate(container.decode(video=0)):
                if n in wanted:
                    wanted[n] = frame.to_ndarray(format="rgb24")
                if n >= last:
                    break
        return np.stack([wanted[int(i)] for i in indices])

    def segments(self, fps: float, segment_frames: int, min_frames: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """(first tick, frames (n, H, W, 3)) for consecutive segments of the ``fps`` timeline."""
        ticks = timeline(self.info, fps)
        starts = segment_starts(len(ticks), segment_frames, min_frames)
        for k, start in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else len(ticks)
            yield start, self.frames(ticks[start:end])


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
