"""The talker denoiser ε_θ(z_t, t, z_sem, K) (paper Eq. 6): the stage-1 conditional denoiser with the
PoseGuider's residuals added at every level (Eq. 5).

``TalkerDenoiser.from_stage1`` copies a trained stage-1 denoiser, so training stage 3 starts from a model
that already renders the face and learns only how landmarks move it; with zero-initialised guider
outputs it is exactly the stage-1 model at step 0.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from fet.diffusion.ddim import DenoiseFn
from fet.models.denoiser import ConditionalDenoiser
from fet.models.pose_guider import PoseGuider, PoseGuiderConfig
from fet.models.presets import ImageModelConfig


@dataclass
class Guidance:
    """A batch of frames' guider residuals, computed once and reused at every diffusion step."""

    residuals: list[torch.Tensor]

    def amplified(self, anchor: Guidance, scale: float) -> Guidance:
        """Residuals moved ``scale`` times as far from ``anchor`` (the reference's own guidance): 1 is the
        model as trained; > 1 exaggerates how far each frame's landmarks move the face from the reference."""
        if scale == 1.0:
            return self
        return Guidance([a + scale * (r - a) for r, a in zip(self.residuals, anchor.residuals)])


class TalkerDenoiser(nn.Module):
    def __init__(self, cfg: ImageModelConfig, guider_cfg: PoseGuiderConfig) -> None:
        super().__init__()
        self.cfg, self.guider_cfg = cfg, guider_cfg
        self.denoiser = ConditionalDenoiser(cfg)
        self.pose_guider = PoseGuider(guider_cfg, self.denoiser.level_channels, cfg.latent_downsample)

    @classmethod
    def from_stage1(cls, denoiser: ConditionalDenoiser, guider_cfg: PoseGuiderConfig) -> TalkerDenoiser:
        talker = cls(denoiser.cfg, guider_cfg)
        talker.denoiser.load_state_dict(copy.deepcopy(denoiser.state_dict()))
        return talker

    def guidance(self, landmark_map: torch.Tensor, reference: list[torch.Tensor] | torch.Tensor) -> Guidance:
        """landmark_map (B, 3, H, W) in [0, 1] + reference map (or its features) → Guidance."""
        return Guidance(self.pose_guider(landmark_map, reference))

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        z_sem: torch.Tensor,
        landmark_map: torch.Tensor,
        reference_map: torch.Tensor,
    ) -> torch.Tensor:
        """x (B, C, h, w), t (B,), z_sem (B, z_dim), maps (B, 3, H, W) → ε or v (B, C, h, w) (Eq. 6)."""
        return self.denoiser(x, t, z_sem, self.pose_guider(landmark_map, reference_map))

    def denoise_fn(self, z_sem: torch.Tensor, guidance: Guidance) -> DenoiseFn:
        """The ``fet.diffusion.ddim`` contract with z_sem and the landmark residuals bound."""
        return lambda x, t: self.denoiser(x, t, z_sem, guidance.residuals)
