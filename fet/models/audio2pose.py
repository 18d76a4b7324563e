"""Audio2Pose (paper 3.4; AniPortrait): audio features + a style id → per-frame 6-d head motion.

Head motion is relative to the reference frame (``fet.landmarks.head_mesh.relative_pose``): pitch,
yaw, roll in radians and a translation in cm, expressed in the reference head's frame. Speaking style
(how much a person nods or sways) is a learned embedding chosen by id; head motion is only loosely
determined by speech, so the loss adds a velocity term that teaches the rhythm rather than the exact
path, and inference smooths the result over time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d
from torch import nn

from fet.models.sequence import TemporalBackbone, run_windowed


@dataclass
class Audio2PoseConfig:
    feature_dim: int = 320
    num_styles: int = 8
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    window: int = 100  # 4 s: head motion is slower than lip motion
    overlap: int = 25
    rotation_weight: float = 10.0  # 0.1 rad of head rotation counts like 1 cm of translation
    smoothing_sigma: float = 2.0  # frames; Gaussian smoothing of the generated pose


class Audio2Pose(nn.Module):
    def __init__(self, cfg: Audio2PoseConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.style = nn.Embedding(cfg.num_styles, cfg.hidden)
        self.backbone = TemporalBackbone(cfg.feature_dim, cfg.hidden, cfg.layers, cfg.heads, cfg.dropout)
        self.head = nn.Linear(cfg.hidden, 6)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def check_style(self, style: int) -> None:
        if not 0 <= style < self.cfg.num_styles:
            raise ValueError(f"pose style {style}: expected 0..{self.cfg.num_styles - 1}")

    def forward(self, features: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """features (B, T, feature_dim); style (B,) int → relative poses (B, T, 6)."""
        return self.head(self.backbone(features, self.style(style)))

    @torch.no_grad()
    def generate(self, features: torch.Tensor, style: int = 0, anchor_first: bool = True) -> torch.Tensor:
        """features (T, D) → (T, 6) smoothed poses; ``anchor_first`` makes frame 0 the reference pose."""
        self.check_style(style)
        features = features.to(next(self.parameters()))  # to the weights' device and precision
        s = torch.tensor([style], device=features.device)
        pose = run_windowed(lambda f: self(f, s), features, self.cfg.window, self.cfg.overlap)
        pose = smooth_pose(pose, self.cfg.smoothing_sigma)
        return pose - pose[:1] if anchor_first else pose


def smooth_pose(pose: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing along time of (T, 6) poses (edges reflected); sigma in frames, 0 = off."""
    if sigma <= 0 or pose.shape[0] < 2:
        return pose
    smoothed = gaussian_filter1d(pose.detach().cpu().double().numpy(), sigma, axis=0, mode="nearest")
    return torch.from_numpy(np.ascontiguousarray(smoothed)).to(pose)


def audio2pose_loss(
    predicted: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    rotation_weight: float = 10.0,
    velocity_weight: float = 1.0,
) -> torch.Tensor:
    """L1 on poses plus L1 on their frame-to-frame velocity.

    predicted, target: (B, T, 6); mask: optional (B, T) — 1 where the frame is valid.
    """
    if predicted.shape != target.shape:
        raise ValueError(f"target: expected shape {tuple(predicted.shape)}, got {tuple(target.shape)}")
    mask = torch.ones(predicted.shape[:2], device=predicted.device) if mask is None else mask.to(predicted)
    w = predicted.new_tensor([rotation_weight] * 3 + [1.0] * 3)
    err = ((predicted - target).abs() * w).mean(-1)  # (B, T)
    loss = (err * mask).sum() / mask.sum().clamp(min=1)
    if predicted.shape[1] > 1:
        dv = ((predicted.diff(dim=1) - target.diff(dim=1)).abs() * w).mean(-1)  # (B, T-1)
        m = mask[:, 1:] * mask[:, :-1]
        loss = loss + velocity_weight * (dv * m).sum() / m.sum().clamp(min=1)
    return loss
