"""Semantic encoder E_sem (paper 3.3; DiffAE's half-UNet encoder without time input).

image (B, 3, H, W) in [-1, 1] → z_sem (B, z_dim). The encoder always sees pixels, never codec latents,
as in DiffAE's latent variant: the semantic code describes the face, not the codec.
"""

from __future__ import annotations

import torch
from diffusers.models.downsampling import Downsample2D
from torch import nn

from fet.models.blocks import ResBlock, SelfAttention
from fet.models.presets import ImageModelConfig


class SemanticEncoder(nn.Module):
    """Half-UNet → GroupNorm → SiLU → head → z_sem.

    ``cfg.encoder_head`` picks the head. ``pool`` is DiffAE's: global average pool → 1×1 conv, so a
    feature's place in the face (hair above it, a beard below) reaches z_sem only through what the
    channels have learned. ``flatten`` reads the whole last feature map (r×r, r = image_size / 2^levels)
    through one linear layer, so z_sem keeps where things are from the first step. It suits small
    images: at 32 px the map is 4×4; at the paper's 512 px it would be 32×32×512 inputs per output.
    """

    def __init__(self, cfg: ImageModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = [cfg.base_channels * m for m in cfg.encoder_channel_mult]
        self.conv_in = nn.Conv2d(3, ch[0], 3, padding=1)
        layers: list[nn.Module] = []
        res = cfg.image_size
        prev = ch[0]
        for i, c in enumerate(ch):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(prev, c, cfg.num_groups, dropout=cfg.dropout))
                prev = c
                if res in cfg.attention_resolutions:
                    layers.append(SelfAttention(c, cfg.num_groups, cfg.attention_head_dim))
            if i < len(ch) - 1:
                layers.append(Downsample2D(c, use_conv=True))
                res //= 2
        self.layers = nn.ModuleList(layers)
        if cfg.encoder_head == "flatten":
            head: list[nn.Module] = [nn.Flatten(), nn.Linear(prev * res * res, cfg.z_dim)]
        else:
            head = [nn.AdaptiveAvgPool2d(1), nn.Conv2d(prev, cfg.z_dim, 1)]
        self.out = nn.Sequential(nn.GroupNorm(cfg.num_groups, prev), nn.SiLU(), *head)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image = image.to(self.conv_in.weight)  # any device/precision in; computes in the weights' own
        h = self.conv_in(image)  # (B, C0, H, W)
        for layer in self.layers:
            h = layer(h)
        return self.out(h).flatten(1)  # (B, z_dim)
