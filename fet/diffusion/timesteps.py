"""How the training timesteps of L_simple are drawn.

``uniform`` is the paper's Eq. 7: t ~ U{0, …, T−1}. ``high_noise`` draws t = ⌊T·√u⌋ with u ~ U(0, 1), a
density that grows linearly with t (mean 2T/3). At low noise x_t already holds most of the image and the
denoiser can predict its target from x_t alone; at high noise it must rely on z_sem. Drawing more
high-noise timesteps therefore gives the semantic encoder more of the gradient, which matters when
stage 1 runs only a few hundred steps (the embedded default on CPU).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

TimestepSampling = Literal["uniform", "high_noise"]


def sample_timesteps(
    batch: int, num_train_timesteps: int, sampling: TimestepSampling, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(batch,) int64 timesteps in [0, num_train_timesteps) on the CPU, drawn from ``generator``."""
    T = num_train_timesteps
    if sampling == "uniform":
        return torch.randint(0, T, (batch,), generator=generator, device="cpu")
    if sampling == "high_noise":
        u = torch.rand(batch, generator=generator, device="cpu", dtype=torch.float64)
        return (u.sqrt() * T).long().clamp_(max=T - 1)
    raise ValueError(f"timestep sampling {sampling!r}: expected one of {list(get_args(TimestepSampling))}")
