"""Exponential moving average of model weights (DiffAE samples and exports the EMA model)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow = d·shadow + (1 − d)·param`` for every parameter (buffers are copied), where the n-th
    update uses ``d = min(decay, (1 + n) / (10 + n))``. The warm-up lets a short run's EMA follow its
    training: at a flat 0.99, after 120 updates 30% of the shadow would still be the initial weights
    (on the demo's stage A that halved how far the predicted mouth opens); a long run reaches ``decay``
    within a few hundred updates. ``updates`` is the optimizer step to restore when a run resumes."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay={decay}: expected 0 <= decay < 1")
        self.decay = decay
        self.updates = 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - self.current_decay()
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.lerp_(p.detach(), weight)
        for s, b in zip(self.shadow.buffers(), model.buffers()):
            s.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow.load_state_dict(state)
