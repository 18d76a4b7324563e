"""One optimizer step as every trainer here takes it (backward, clip, step, schedule, EMA), the
learning-rate schedule and the per-step random generators of the distributed trainer."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from fet.training.ema import EMA
from fet.training.job_config import JobOptim


def apply_gradients(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    grad_clip: float,
    lr_schedule: torch.optim.lr_scheduler.LRScheduler,
    ema: EMA | None = None,
    model: torch.nn.Module | None = None,
) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    lr_schedule.step()
    if ema is not None:
        ema.update(model)


def lr_lambda(optim: JobOptim, steps: int) -> Callable[[int], float]:
    """LR factor of step ``step``: linear warm-up, then cosine decay to ``min_lr_ratio`` (or constant)."""

    def factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.schedule == "constant":
            return 1.0
        progress = (step - optim.warmup_steps) / max(1, steps - optim.warmup_steps)
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """Noise and timesteps of one rank's micro-batch: a function of (seed, step, rank) only, so a
    resumed run draws what the uninterrupted run would have drawn."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1009 + rank)
