"""The temporal backbone shared by Audio2Mesh and Audio2Pose, and windowed inference for long audio.

Per-frame audio features go through a small temporal conv front-end (local co-articulation context),
then a Transformer encoder over a window of frames (AniPortrait's audio-to-motion design: wav2vec
features → transformer → per-frame motion). Training sees windows of ``window`` frames; inference runs
overlapping windows of the same length and cross-fades them, so any length of audio costs memory
bounded by the window and the model never attends over a longer span than it was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(length, dim) fixed sinusoidal position encoding (Vaswani et al. 2017)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


class TemporalBackbone(nn.Module):
    """(B, T, feature_dim) audio features (+ a (B, hidden) condition) → (B, T, hidden)."""

    def __init__(self, feature_dim: int, hidden: int, layers: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.proj = nn.Linear(feature_dim, hidden)
        self.conv = nn.Sequential(
            nn.Conv1d(hidden, hidden, 5, padding=2), nn.GELU(), nn.Conv1d(hidden, hidden, 5, padding=2)
        )
        layer = nn.TransformerEncoderLayer(
            hidden, heads, 4 * hidden, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, features: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        h = self.proj(features)  # (B, T, H)
        h = h + self.conv(h.transpose(1, 2)).transpose(1, 2)
        if condition is not None:
            h = h + condition[:, None, :]
        h = h + sinusoidal_positions(h.shape[1], h.shape[2], h.device).to(h.dtype)
        return self.norm(self.transformer(h))  # (B, T, H)


def run_windowed(
    fn: Callable[[torch.Tensor], torch.Tensor], features: torch.Tensor, window: int, overlap: int
) -> torch.Tensor:
    """Apply ``fn`` ((1, t, D) → (1, t, ...)) over overlapping windows of (T, D) features → (T, ...).

    Overlaps are cross-faded linearly; a sequence no longer than ``window`` is one call.
    """
    T = features.shape[0]
    if window >= T:
        return fn(features[None])[0]
    if not 0 <= overlap < window:
        raise ValueError(f"overlap={overlap}: expected 0 <= overlap < window={window}")
    hop = window - overlap
    starts = [*list(range(0, T - window, hop)), T - window]
    out: torch.Tensor | None = None
    weight = torch.zeros(T, device=features.device)
    for s in starts:
        y = fn(features[None, s : s + window])[0]  # (window, ...)
        w = torch.ones(window, device=features.device)
        if overlap:
            ramp = torch.linspace(0, 1, overlap + 2, device=features.device)[1:-1]
            if s > 0:
                w[:overlap] = ramp
            if s + window < T:
                w[-overlap:] = ramp.flip(0)
        if out is None:
            out = torch.zeros((T, *y.shape[1:]), device=y.device, dtype=y.dtype)
        shape = (window,) + (1,) * (y.ndim - 1)
        out[s : s + window] += y * w.view(shape)
        weight[s : s + window] += w
    return out / weight.view((T,) + (1,) * (out.ndim - 1))
