"""Training examples for the audio → landmarks models: windows of audio features with the face's
vertex offsets and head motion relative to a reference frame of the same clip.

The reference frame is drawn at random per example (not always frame 0), so the models learn motion
relative to whatever expression and pose the reference happens to have — as at inference, where the
reference is any photo.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from fet.audio.features import AudioEncoder
from fet.data.clip_folder import ClipRecord
from fet.landmarks.face_mesh import NUM_MESH_VERTICES
from fet.landmarks.head_mesh import head_mesh, relative_pose


@dataclass
class MotionClip:
    clip_id: str
    style: int
    features: torch.Tensor  # (T, D)
    meshes: np.ndarray  # (T, 478, 3) head-frame cm
    transform: np.ndarray  # (T, 4, 4)


def prepare_motion_clip(clip: ClipRecord, encoder: AudioEncoder, num_styles: int) -> MotionClip:
    T = clip.frames.shape[0]
    meshes = np.stack([head_mesh(clip.landmarks[t], clip.transform[t]) for t in range(T)])
    style = zlib.crc32(clip.speaker.encode()) % num_styles
    return MotionClip(clip.clip_id, style, encoder(clip.audio, T), meshes, clip.transform)


def motion_targets(clip: MotionClip, reference: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """→ reference mesh (468, 3), offsets (T, 468, 3), relative poses (T, 6) w.r.t. frame ``reference``."""
    ref = clip.meshes[reference, :NUM_MESH_VERTICES]
    offsets = clip.meshes[:, :NUM_MESH_VERTICES] - ref
    return ref, offsets, relative_pose(clip.transform, clip.transform[reference])


def motion_batch(
    clips: list[MotionClip], batch_size: int, window: int, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """A batch of windows from clips drawn at random (see ``motion_windows``)."""
    return motion_windows([clips[rng.integers(len(clips))] for _ in range(batch_size)], window, rng)


def motion_windows(clips: list[MotionClip], window: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """One random window per clip: features (B, W, D), reference_mesh (B, 468, 3), offsets (B, W, 468, 3),
    poses (B, W, 6), style (B,), mask (B, W) (0 past the end of a short clip)."""
    feats, refs, offs, poses, styles, masks = [], [], [], [], [], []
    for c in clips:
        T = c.features.shape[0]
        start = int(rng.integers(0, max(1, T - window + 1)))
        n = min(window, T - start)
        ref, off, pose = motion_targets(c, int(rng.integers(T)))
        pad = window - n
        feats.append(torch.nn.functional.pad(c.features[start : start + n], (0, 0, 0, pad)))
        refs.append(torch.from_numpy(ref).float())
        offs.append(torch.from_numpy(np.pad(off[start : start + n], ((0, pad), (0, 0), (0, 0)))).float())
        poses.append(torch.from_numpy(np.pad(pose[start : start + n], ((0, pad), (0, 0)))).float())
        styles.append(c.style)
        masks.append(torch.cat([torch.ones(n), torch.zeros(pad)]))
    return {
        "features": torch.stack(feats),
        "reference_mesh": torch.stack(refs),
        "offsets": torch.stack(offs),
        "poses": torch.stack(poses),
        "style": torch.tensor(styles),
        "mask": torch.stack(masks),
    }
