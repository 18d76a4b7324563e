"""Write talking-head videos: H.264 video + AAC audio in an mp4 (PyAV / FFmpeg)."""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from fet import storage


def encode_mp4(frames: np.ndarray, audio: np.ndarray | None, sample_rate: int, fps: int = 25, crf: int = 18) -> bytes:
    """frames (T, H, W, 3) uint8 RGB (H, W even) + mono float audio in [-1, 1] → mp4 bytes."""
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames: expected (T, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"frames: H and W must be even for H.264 4:2:0, got {frames.shape[1]}x{frames.shape[2]}")
    fd, tmp = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        with av.open(tmp, "w", format="mp4") as out:
            v = out.add_stream("libx264", rate=fps)
            v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            v.options = {"crf": str(crf), "preset": "veryfast"}
            a = None
            if audio is not None:
                a = out.add_stream("aac", rate=sample_rate, layout="mono")
                a.time_base = Fraction(1, sample_rate)
            for i, f in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(f, format="rgb24")
                frame.pts = i
                out.mux(v.encode(frame))
            out.mux(v.encode())
            if a is not None:
                pcm = np.clip(audio, -1, 1).astype(np.float32)[None]
                chunk = 1024
                for start in range(0, pcm.shape[1], chunk):
                    af = av.AudioFrame.from_ndarray(
                        np.ascontiguousarray(pcm[:, start : start + chunk]), format="fltp", layout="mono"
                    )
                    af.sample_rate, af.pts = sample_rate, start
                    out.mux(a.encode(af))
                out.mux(a.encode())
        return Path(tmp).read_bytes()
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_mp4(uri: str, frames: np.ndarray, audio: np.ndarray | None, sample_rate: int, fps: int = 25) -> None:
    """Encode and write atomically to a local path or ``s3://`` URI."""
    storage.write_bytes(uri, encode_mp4(frames, audio, sample_rate, fps))
