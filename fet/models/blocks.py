"""UNet building blocks with DiffAE's conditioning (Preechakul et al. 2022, Sec. 3.1 and Appendix).

A residual block applies the diffusion time as scale and shift and the semantic code as a scale only:

    h = GroupNorm(h);  h = h · (1 + s_t) + b_t;  h = h · (1 + s_z);  h = conv0(dropout(SiLU(h)))

with ``conv0`` zero-initialised, so every block starts as the identity. Down/up-sampling, attention and
time embeddings come from diffusers.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention
from torch import nn


def zero_module(module: nn.Module) -> nn.Module:
    """Zero all parameters: a residual branch that starts switched off."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block with optional time (scale+shift) and semantic-code (scale) conditioning."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_groups: int,
        time_dim: int | None = None,
        cond_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm_in = nn.GroupNorm(num_groups, in_channels)
        self.conv_in = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * out_channels)) if time_dim else None
        self.cond_proj = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, out_channels)) if cond_dim else None
        self.norm_out = nn.GroupNorm(num_groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv_out = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(
        self, x: torch.Tensor, time_emb: torch.Tensor | None = None, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.conv_in(nn.functional.silu(self.norm_in(x)))  # (B, C_out, H, W)
        h = self.norm_out(h)
        if self.time_proj is not None:
            scale, shift = self.time_proj(time_emb)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        if self.cond_proj is not None:
            h = h * (1 + self.cond_proj(cond)[:, :, None, None])
        h = self.conv_out(self.dropout(nn.functional.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """GroupNorm + multi-head self-attention over spatial positions, residual (diffusers ``Attention``)."""

    def __init__(self, channels: int, num_groups: int, head_dim: int) -> None:
        super().__init__()
        heads = max(1, channels // head_dim)
        self.attn = Attention(
            channels,
            heads=heads,
            dim_head=channels // heads,
            norm_num_groups=num_groups,
            residual_connection=True,
            bias=True,
            _from_deprecated_attn_block=True,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)  # (B, C, H, W): diffusers flattens space, attends, restores, adds x
