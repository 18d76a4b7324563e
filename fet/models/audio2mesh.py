"""Audio2Mesh (paper 3.4; AniPortrait): per-frame audio features → offsets of the 468 mesh vertices.

The offsets are in the face's own head frame (cm), relative to the reference mesh, so they carry the
expression (mouth, jaw, blinks) and none of the head pose. The reference mesh conditions the backbone,
letting the model learn how far this face's mouth is already open. The output layer starts at zero:
a fresh model animates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fet.landmarks.face_mesh import NUM_MESH_VERTICES
from fet.models.sequence import TemporalBackbone, run_windowed


@dataclass
class Audio2MeshConfig:
    feature_dim: int = 320  # the audio encoder's per-frame dimension
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    window: int = 50  # frames per training window and inference window (2 s at 25 fps)
    overlap: int = 10  # frames shared by neighbouring inference windows


class Audio2Mesh(nn.Module):
    def __init__(self, cfg: Audio2MeshConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mesh_proj = nn.Linear(NUM_MESH_VERTICES * 3, cfg.hidden)
        self.backbone = TemporalBackbone(cfg.feature_dim, cfg.hidden, cfg.layers, cfg.heads, cfg.dropout)
        self.head = nn.Linear(cfg.hidden, NUM_MESH_VERTICES * 3)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, features: torch.Tensor, reference_mesh: torch.Tensor) -> torch.Tensor:
        """features (B, T, feature_dim); reference_mesh (B, 468, 3) cm → offsets (B, T, 468, 3) cm."""
        b, t, _ = features.shape
        centred = reference_mesh - reference_mesh.mean(1, keepdim=True)  # position-free shape
        h = self.backbone(features, self.mesh_proj(centred.reshape(b, -1)))  # (B, T, H)
        return self.head(h).view(b, t, NUM_MESH_VERTICES, 3)

    @torch.no_grad()
    def generate(self, features: torch.Tensor, reference_mesh: torch.Tensor) -> torch.Tensor:
        """Any length: features (T, D), reference_mesh (468, 3) → (T, 468, 3), windowed."""
        weight = self.head.weight  # inputs move to the weights' device and precision; the result stays there
        features, ref = features.to(weight), reference_mesh.to(weight)[None]
        return run_windowed(lambda f: self(f, ref), features, self.cfg.window, self.cfg.overlap)


def audio2mesh_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L1 on vertex offsets (paper Appendix A: Audio2Mesh trained with an L1 loss on the mesh).

    predicted, target: (B, T, 468, 3); mask: optional (B, T) — 1 where the frame is valid.
    """
    if predicted.shape != target.shape:
        raise ValueError(f"target: expected shape {tuple(predicted.shape)}, got {tuple(target.shape)}")
    err = (predicted - target).abs().mean(dim=(2, 3))  # (B, T)
    if mask is None:
        return err.mean()
    return (err * mask).sum() / mask.sum().clamp(min=1)
