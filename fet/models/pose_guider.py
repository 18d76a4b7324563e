"""PoseGuider E_ldm (paper Eq. 5, "multi-scale & cross-attention" of Table 4).

A landmark map K (the frame's coloured contours, ``fet.landmarks.landmark_map``) goes through a conv
stem down to the denoiser's latent resolution, then one stage per denoiser level. Each stage refines
the features and cross-attends to the same stage's features of the reference landmark map K_ref (the
stem and stages are shared by both maps), so a stage sees how this frame's face differs from the
reference's. A zero-initialised 1×1 conv turns each stage into a residual added to the denoiser's
hidden state where that level starts (``ConditionalDenoiser(level_residuals=...)``): at initialisation
the talker is exactly the stage-1 denoiser.

The guider depends on neither x_t nor t, so the pipeline computes a frame's residuals once and reuses
them at every DDIM step, and encodes the reference map once per video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from fet.models.blocks import zero_module


@dataclass
class PoseGuiderConfig:
    stem_channels: tuple[int, ...] = (16, 32)  # conv stem; one stride-2 step per entry after the first
    # when the codec downsamples (AniPortrait's guider: 16, 32, 64, 128 for 8x)
    attention_head_dim: int = 32
    num_groups: int = 8
    map_channels: int = 3


class _Stage(nn.Module):
    def __init__(self, cin: int, cout: int, downsample: bool, groups: int, head_dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=2 if downsample else 1, padding=1),
            nn.GroupNorm(groups, cout),
            nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        heads = max(1, cout // head_dim)
        self.norm = nn.LayerNorm(cout)
        self.cross = Attention(cout, cross_attention_dim=cout, heads=heads, dim_head=cout // heads, bias=True)
        self.out = zero_module(nn.Conv2d(cout, cout, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (B, C, h, w)

    def attend(self, h: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """h (B, C, h, w) frame features; ref (B or 1, C, h, w) reference features → same as h."""
        b, c, hh, ww = h.shape
        q = h.flatten(2).transpose(1, 2)  # (B, hw, C)
        kv = ref.flatten(2).transpose(1, 2).expand(b, -1, -1)  # (B, hw, C)
        q = q + self.cross(self.norm(q), encoder_hidden_states=self.norm(kv))
        return q.transpose(1, 2).reshape(b, c, hh, ww)


class PoseGuider(nn.Module):
    """Landmark maps → one zero-initialised residual per denoiser level."""

    def __init__(
        self, cfg: PoseGuiderConfig, level_channels: tuple[int, ...], latent_downsample: int, num_groups: int = 8
    ) -> None:
        super().__init__()
        self.cfg, self.level_channels = cfg, tuple(level_channels)
        steps = int(math.log2(latent_downsample))
        if 2**steps != latent_downsample:
            raise ValueError(f"latent_downsample={latent_downsample}: expected a power of two")
        if len(cfg.stem_channels) < steps + 1:
            raise ValueError(
                f"stem_channels={cfg.stem_channels}: {steps} downsamplings need at least {steps + 1} entries"
            )
        layers: list[nn.Module] = [nn.Conv2d(cfg.map_channels, cfg.stem_channels[0], 3, padding=1), nn.SiLU()]
        for i, (cin, cout) in enumerate(zip(cfg.stem_channels[:-1], cfg.stem_channels[1:])):
            layers += [nn.Conv2d(cin, cout, 3, stride=2 if i < steps else 1, padding=1), nn.SiLU()]
        self.stem = nn.Sequential(*layers)
        self.stages = nn.ModuleList()
        prev = cfg.stem_channels[-1]
        for i, c in enumerate(self.level_channels):
            self.stages.append(_Stage(prev, c, i > 0, cfg.num_groups, cfg.attention_head_dim))
            prev = c

    def encode_reference(self, reference_map: torch.Tensor) -> list[torch.Tensor]:
        """Reference map (R, 3, H, W) in [0, 1] → per-stage features (R, C_i, h_i, w_i); R = 1 or B."""
        feats, h = [], self.stem(reference_map.to(self.stem[0].weight))
        for stage in self.stages:
            h = stage.features(h)
            feats.append(h)
        return feats

    def forward(self, landmark_map: torch.Tensor, reference: list[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
        """landmark_map (B, 3, H, W); reference map or its ``encode_reference`` features → residuals."""
        ref = self.encode_reference(reference) if isinstance(reference, torch.Tensor) else reference
        out, h = [], self.stem(landmark_map.to(self.stem[0].weight))  # to the weights' device and precision
        for stage, r in zip(self.stages, ref):
            h = stage.features(h)
            out.append(stage.out(stage.attend(h, r)))  # (B, C_i, h_i, w_i)
        return out
