"""Write talking-head videos: H.264 video + AAC audio in an mp4 (PyAV / FFmpeg).

``Mp4Writer`` streams frames in as they are generated (memory bounded by one batch), muxes the audio at
the end and publishes the file atomically: a local file appears under its name only when complete, an
``s3://`` object is uploaded only when complete, and a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from fet import storage

MP4_SUFFIXES = (".mp4", ".m4v")


def check_destination(uri: str | os.PathLike) -> None:
    """Refuse, before any work, a destination the video cannot go to: a name that says another container
    (the file is always an mp4, and players and browsers go by the name) or a place it cannot be written."""
    uri = str(uri)
    storage.check_writable(uri)  # first: a folder is named as one
    if not uri.lower().endswith(MP4_SUFFIXES):
        raise ValueError(f"{uri}: expected a name ending in {' or '.join(MP4_SUFFIXES)} (the video is H.264 + AAC "
                         "in an mp4)")  # fmt: skip


class Mp4Writer:
    """``with Mp4Writer(uri, width, height, fps, sample_rate) as w: w.write(frames); w.set_audio(audio)``.

    ``sample_rate`` declares the audio stream up front (FFmpeg fixes the streams at the first packet);
    ``None`` writes a video without audio.
    """

    def __init__(
        self,
        uri: str | os.PathLike,
        width: int,
        height: int,
        fps: int = 25,
        sample_rate: int | None = None,
        crf: int = 18,
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"video size {width}x{height}: H.264 4:2:0 needs even width and height")
        self.uri, self.width, self.height, self.fps = str(uri), width, height, fps
        check_destination(self.uri)
        fd, self._tmp = tempfile.mkstemp(suffix=".mp4")
        os.close(fd)
        import av  # FFmpeg loads with the first writer, not with every module that imports this one

        self._out = av.open(self._tmp, "w", format="mp4")
        self._video = self._out.add_stream("libx264", rate=fps)
        self._video.width, self._video.height, self._video.pix_fmt = width, height, "yuv420p"
        self._video.options = {"crf": str(crf), "preset": "veryfast"}
        self._audio_stream = None
        if sample_rate is not None:
            self._audio_stream = self._out.add_stream("aac", rate=sample_rate, layout="mono")
            self._audio_stream.time_base = Fraction(1, sample_rate)
        self.sample_rate = sample_rate
        self._audio: np.ndarray | None = None
        self.frames_written = 0
        self.kept = False  # a whole video that could not be published, kept for its owner

    def write(self, frames: np.ndarray) -> None:
        """frames (T, H, W, 3) uint8 RGB."""
        if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3) or frames.dtype != np.uint8:
            raise ValueError(
                f"frames: expected (T, {self.height}, {self.width}, 3) uint8, got {frames.dtype} {frames.shape}"
            )
        import av

        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts = self.frames_written
            self._out.mux(self._video.encode(frame))
            self.frames_written += 1

    def set_audio(self, audio: np.ndarray) -> None:
        """Mono float audio in [-1, 1] at the declared sample rate, muxed when the writer closes."""
        if self._audio_stream is None:
            raise ValueError("this writer was opened without an audio stream (sample_rate=None)")
        self._audio = np.clip(np.asarray(audio, np.float32).reshape(-1), -1, 1)

    def _finish(self) -> None:
        import av

        self._out.mux(self._video.encode())
        if self._audio_stream is not None:
            if self._audio is None:
                raise ValueError("an audio stream was declared but no audio was given (set_audio)")
            pcm, sr, a = self._audio, self.sample_rate, self._audio_stream
            for start in range(0, pcm.size, 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[None, start : start + 1024]), "fltp", "mono")
                af.sample_rate, af.pts = sr, start
                self._out.mux(a.encode(af))
            self._out.mux(a.encode())
        self._out.close()

    def close(self) -> None:
        """Finish the file and publish it. A whole video that cannot be published (the folder went away, the
        bucket refused it) is kept, and the error says where."""
        try:
            self._finish()
        except BaseException:
            Path(self._tmp).unlink(missing_ok=True)
            raise
        partial = self.uri + ".partial"
        try:
            if storage.is_s3(self.uri):
                storage.write_bytes(self.uri, Path(self._tmp).read_bytes())
                Path(self._tmp).unlink()
            else:
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(self._tmp, partial)
                os.chmod(partial, storage.new_file_mode())  # not mkstemp's owner-only 0o600
                os.replace(partial, self.uri)
        except OSError as e:
            kept, self.kept = partial, True  # abort (the caller's clean-up) leaves it
            if Path(self._tmp).exists():
                kept = self._tmp
                with contextlib.suppress(OSError):  # a copy across file systems that stopped half-way
                    Path(partial).unlink()
            raise storage.StorageError(f"{self.uri}: the video could not be written there ({e}); kept at {kept}") from e

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._out.close()
        if not self.kept:
            Path(self._tmp).unlink(missing_ok=True)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def encode_mp4(frames: np.ndarray, audio: np.ndarray | None, sample_rate: int, fps: int = 25, crf: int = 18) -> bytes:
    """frames (T, H, W, 3) uint8 RGB (H, W even) + mono float audio in [-1, 1] → mp4 bytes."""
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames: expected (T, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "video.mp4")
        with Mp4Writer(
            path, frames.shape[2], frames.shape[1], fps, sample_rate if audio is not None else None, crf
        ) as w:
            w.write(frames)
            if audio is not None:
                w.set_audio(audio)
        return Path(path).read_bytes()


def write_mp4(
    uri: str, frames: np.ndarray, audio: np.ndarray | None, sample_rate: int, fps: int = 25, crf: int = 18
) -> None:
    """Encode and write atomically to a local path or ``s3://`` URI (``crf`` 0: lossless)."""
    storage.write_bytes(uri, encode_mp4(frames, audio, sample_rate, fps, crf))
