"""Conditional denoiser ε_θ(x_t, t, z_sem) (paper Eq. 3/7; DiffAE's conditional DDIM UNet); it predicts ε
or v as ``cfg.prediction_type`` says (``fet.models.presets``).

Res-blocks take the time as scale+shift and z_sem as a scale (``fet.models.blocks.ResBlock``); every
residual branch and the output conv are zero-initialised, so a fresh model predicts 0.

``level_residuals`` is the hook the talker (paper Eq. 5–6) uses: one feature map per resolution level,
``(B, level_channels[i], level_resolutions[i], level_resolutions[i])``, added to the hidden state where
that level starts. The PoseGuider builds its outputs to these shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.upsampling import Upsample2D
from torch import nn

from fet.models.blocks import ResBlock, SelfAttention, zero_module
from fet.models.presets import ImageModelConfig


class ConditionalDenoiser(nn.Module):
    """UNet predicting the noise ε (or v) of ``x_t`` given timestep ``t`` and semantic code ``z_sem``."""

    def __init__(self, cfg: ImageModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = [cfg.base_channels * m for m in cfg.channel_mult]
        time_dim = 4 * cfg.base_channels
        self.time_features = Timesteps(cfg.base_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(cfg.base_channels, time_dim)
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1)

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, cfg.num_groups, time_dim, cfg.z_dim, cfg.dropout)

        def attn(c: int, r: int) -> nn.Module:
            if r in cfg.attention_resolutions:
                return SelfAttention(c, cfg.num_groups, cfg.attention_head_dim)
            return nn.Identity()

        resolutions = [cfg.latent_size // 2**i for i in range(len(ch))]
        # channels of the hidden state where each level starts (before its res-blocks change them)
        self.level_channels = tuple([ch[0], *ch[:-1]])
        self.level_resolutions = tuple(resolutions)

        # Encoder half: per level, num_res_blocks (res, attn) pairs, then a downsample.
        self.down_blocks = nn.ModuleList()
        self.down_attns = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        skip_channels = [ch[0]]
        prev = ch[0]
        for i, c in enumerate(ch):
            for _ in range(cfg.num_res_blocks):
                self.down_blocks.append(res(prev, c))
                self.down_attns.append(attn(c, resolutions[i]))
                prev = c
                skip_channels.append(c)
            if i < len(ch) - 1:
                self.downsamples.append(Downsample2D(c, use_conv=True))
                skip_channels.append(c)

        self.mid_block1 = res(prev, prev)
        self.mid_attn = SelfAttention(prev, cfg.num_groups, cfg.attention_head_dim)
        self.mid_block2 = res(prev, prev)

        # Decoder half: per level, num_res_blocks + 1 res-blocks, each eating one skip, then upsample.
        self.up_blocks = nn.ModuleList()
        self.up_attns = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i in reversed(range(len(ch))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up_blocks.append(res(prev + skip_channels.pop(), ch[i]))
                self.up_attns.append(attn(ch[i], resolutions[i]))
                prev = ch[i]
            if i > 0:
                self.upsamples.append(Upsample2D(prev, use_conv=True))

        self.out = nn.Sequential(
            nn.GroupNorm(cfg.num_groups, prev),
            nn.SiLU(),
            zero_module(nn.Conv2d(prev, cfg.latent_channels, 3, padding=1)),
        )

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        z_sem: torch.Tensor,
        level_residuals: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x: (B, C, h, w) noisy latent; t: (B,) timesteps; z_sem: (B, z_dim) → ε: (B, C, h, w)."""
        cfg = self.cfg
        n_levels = len(self.level_channels)
        if level_residuals is not None and len(level_residuals) != n_levels:
            raise ValueError(f"level_residuals: expected {n_levels} feature maps, got {len(level_residuals)}")
        # inputs follow the weights' device and precision (a frozen fp32 encoder feeding a bf16 model,
        # CPU tensors of a held-out report feeding a GPU model)
        x = x.to(self.conv_in.weight)
        z_sem = z_sem.to(x)
        t = t.to(x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        emb = self.time_embed(self.time_features(t).to(x.dtype))  # (B, 4·C0)

        h = self.conv_in(x)  # (B, C0, h, w)
        skips = [h]
        block = 0
        for i in range(n_levels):
            if level_residuals is not None:
                h = h + level_residuals[i].to(h)
                skips[-1] = h
            for _ in range(cfg.num_res_blocks):
                h = self.down_attns[block](self.down_blocks[block](h, emb, z_sem))
                skips.append(h)
                block += 1
            if i < n_levels - 1:
                h = self.downsamples[i](h)  # (B, C_i, h/2, w/2)
                skips.append(h)

        h = self.mid_block2(self.mid_attn(self.mid_block1(h, emb, z_sem)), emb, z_sem)

        block = 0
        for j, i in enumerate(reversed(range(n_levels))):
            for _ in range(cfg.num_res_blocks + 1):
                h = torch.cat([h, skips.pop()], dim=1)  # (B, C + C_skip, ., .)
                h = self.up_attns[block](self.up_blocks[block](h, emb, z_sem))
                block += 1
            if i > 0:
                h = self.upsamples[j](h)
        return self.out(h)  # (B, C, h, w)
