"""Training losses of the image feature-space module (paper Eq. 7 and Eq. 8).

Noise and timesteps are drawn per sample from a generator seeded by the caller, so a sample's loss
term does not depend on which batch (or which data-parallel rank) it lands in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from torch import nn

from fet.diffusion.timesteps import TimestepSampling, sample_timesteps


def diffusion_loss(
    denoiser: nn.Module,
    x_0: torch.Tensor,
    z_sem: torch.Tensor,
    scheduler: DDIMScheduler,
    generator: torch.Generator | None = None,
    timesteps: TimestepSampling = "uniform",
    **denoiser_kwargs,
) -> torch.Tensor:
    """L_simple = E_{x_0, ε, t} ‖ε_θ(x_t, t, z_sem) − ε‖² (Eq. 7; Eq. 9 with landmark kwargs).

    x_0: (B, C, h, w) clean latents; z_sem: (B, z_dim). t ~ U{0, …, T−1} (or as ``timesteps`` says,
    ``fet.diffusion.timesteps``), ε ~ N(0, I). When the
    scheduler's ``prediction_type`` is ``v_prediction`` the target is v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 instead.
    """
    b = x_0.shape[0]
    t = sample_timesteps(b, scheduler.config.num_train_timesteps, timesteps, generator).to(x_0.device)
    noise = torch.randn(x_0.shape, generator=generator, device="cpu", dtype=x_0.dtype).to(x_0.device)
    x_t = scheduler.add_noise(x_0, noise, t)
    prediction = denoiser(x_t, t, z_sem, **denoiser_kwargs)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = scheduler.get_velocity(x_0, noise, t)
    else:
        raise ValueError(f"scheduler prediction_type={kind!r}: expected 'epsilon' or 'v_prediction'")
    return F.mse_loss(prediction.float(), target.float())


def attribute_bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of Eq. 8 over every labelled (image, attribute) pair.

    logits: (B, A); labels: (B, A) int with 1 present, 0 absent, −1 unknown (ignored).
    """
    if logits.shape != labels.shape:
        raise ValueError(f"labels: expected shape {tuple(logits.shape)}, got {tuple(labels.shape)}")
    known = labels >= 0
    if not known.any():
        raise ValueError("labels: every label in the batch is unknown (-1); nothing to learn from")
    return F.binary_cross_entropy_with_logits(logits[known], labels[known].float())
