"""DDIM sampling and deterministic DDIM inversion (Song et al. 2021, Eq. 12 with η = 0; paper Eq. 3, 6).

Both are plain functions over one denoiser contract, ``denoise_fn(x_t, t) -> prediction`` with ``t`` a
(B,) tensor and the prediction ε̂ or v̂ as ``cfg.prediction_type`` says, so the stage-1 denoiser, the
talker (with landmark features bound in) and tests all use the same code. The schedule (T = 1000 linear
betas, DiffAE's) and the update rules are diffusers' ``DDIMScheduler`` and ``DDIMInverseScheduler``; for
an ε-model with ε̂ ≡ 0 the two are exact inverses of each other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from fet.models.presets import ImageModelConfig

DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, int, torch.Tensor], None]  # (step index, total steps, current x)


def scheduler_kwargs(cfg: ImageModelConfig) -> dict:
    return dict(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule="linear",
        clip_sample=False,
        set_alpha_to_one=True,
        prediction_type=cfg.prediction_type,
    )


def training_scheduler(cfg: ImageModelConfig) -> DDIMScheduler:
    """The forward process q(x_t | x_0) used by the training losses (``add_noise``)."""
    return DDIMScheduler(**scheduler_kwargs(cfg))


def _check_steps(steps: int, cfg: ImageModelConfig) -> None:
    if not 1 <= steps <= cfg.num_train_timesteps:
        raise ValueError(f"steps={steps}: expected 1..{cfg.num_train_timesteps}")


def per_sample_noise(shape: tuple[int, ...], generators: list[torch.Generator], device, dtype) -> torch.Tensor:
    """(B, ...) standard normal noise, sample b drawn from ``generators[b]`` (CPU), so a sample's noise
    does not depend on the batch it is in."""
    if len(generators) != shape[0]:
        raise ValueError(f"generators: expected one per sample ({shape[0]}), got {len(generators)}")
    return torch.stack([torch.randn(shape[1:], generator=g, dtype=dtype) for g in generators]).to(device)


@torch.no_grad()
def ddim_sample(
    denoise_fn: DenoiseFn,
    x_T: torch.Tensor,
    steps: int,
    cfg: ImageModelConfig,
    callback: Callback | None = None,
    eta: float = 0.0,
    generators: list[torch.Generator] | None = None,
) -> torch.Tensor:
    """x_T (B, C, h, w) → x_0 by ``steps`` DDIM steps; η = 0 is deterministic, η > 0 adds noise drawn
    per sample from ``generators`` (required then)."""
    _check_steps(steps, cfg)
    if eta > 0 and generators is None:
        raise ValueError("eta > 0 needs one generator per sample")
    scheduler = DDIMScheduler(**scheduler_kwargs(cfg))
    scheduler.set_timesteps(steps, device=x_T.device)
    x = x_T
    for i, t in enumerate(scheduler.timesteps):
        prediction = denoise_fn(x, t.expand(x.shape[0]))
        noise = per_sample_noise(tuple(x.shape), generators, x.device, x.dtype) if eta > 0 else None
        x = scheduler.step(prediction, t, x, eta=eta, variance_noise=noise).prev_sample
        if callback is not None:
            callback(i, steps, x)
    return x


@torch.no_grad()
def ddim_invert(
    denoise_fn: DenoiseFn, x_0: torch.Tensor, steps: int, cfg: ImageModelConfig, callback: Callback | None = None
) -> torch.Tensor:
    """x_0 (B, C, h, w) → the stochastic code x_T by running the η = 0 ODE forwards (DiffAE's encoder)."""
    _check_steps(steps, cfg)
    scheduler = DDIMInverseScheduler(**scheduler_kwargs(cfg))
    scheduler.set_timesteps(steps, device=x_0.device)
    x = x_0
    for i, t in enumerate(scheduler.timesteps):
        prediction = denoise_fn(x, t.expand(x.shape[0]))
        x = scheduler.step(prediction, t, x).prev_sample
        if callback is not None:
            callback(i, steps, x)
    return x
