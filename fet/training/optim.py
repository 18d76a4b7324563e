"""One optimizer step as every trainer here takes it: backward, clip, step, schedule, EMA."""

from __future__ import annotations

import torch

from fet.training.ema import EMA


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
