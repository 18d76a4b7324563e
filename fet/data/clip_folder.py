"""Talking clips with per-frame landmarks, read from a folder (the SynthTalk layout).

    <root>/<split>/<clip_id>.mp4   video (25 fps) with its audio track
    <root>/<split>/<clip_id>.npz   landmarks (T, 478, 3) normalised, transform (T, 4, 4)[, audio (N,) 16 kHz]

This is what the single-process trainers of stage A (Audio2Mesh/Audio2Pose) and stage 3 (talker)
read; the Ray preprocessing job writes clip shards with the same fields for cluster training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fet.audio.load import load_audio


@dataclass
class ClipRecord:
    clip_id: str
    speaker: str  # identity key: pose style and "same person" both use it
    frames: np.ndarray  # (T, H, W, 3) uint8 square crops
    audio: np.ndarray  # (N,) float32, 16 kHz mono
    landmarks: np.ndarray  # (T, 478, 3) normalised
    transform: np.ndarray  # (T, 4, 4)
    fps: int = 25
    features: np.ndarray | None = None  # (T, D) precomputed audio features (clip shards)
    encoder: str | None = None  # what computed them (``fet.data.preprocess.encoder_name``)

    def __post_init__(self) -> None:
        T = self.frames.shape[0]
        if self.landmarks.shape[0] != T or self.transform.shape[0] != T:
            raise ValueError(
                f"clip {self.clip_id}: {T} frames but {self.landmarks.shape[0]} landmark sets and "
                f"{self.transform.shape[0]} transforms"
            )


def list_clips(root: str | Path, split: str | None = None) -> list[Path]:
    """The ``.mp4`` clips under ``root`` (one split or all) that have an ``.npz`` sidecar, sorted."""
    base = Path(root) / split if split else Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no such clip folder")
    clips = sorted(p for p in base.rglob("*.mp4") if p.with_suffix(".npz").is_file())
    if not clips:
        raise FileNotFoundError(f"{base}: no .mp4 clips with .npz landmark sidecars")
    return clips


def read_clip(path: str | Path) -> ClipRecord:
    import decord

    path = Path(path)
    side = np.load(path.with_suffix(".npz"))
    frames = decord.VideoReader(str(path)).get_batch(list(range(side["landmarks"].shape[0]))).asnumpy()
    audio = side["audio"].astype(np.float32) if "audio" in side else load_audio(str(path))
    return ClipRecord(path.stem, path.stem, frames, audio, side["landmarks"], side["transform"])
