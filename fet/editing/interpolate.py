"""Interpolation between two faces (DiffAE Sec. 5.1): lerp the semantic codes, slerp the stochastic codes.

x_T is (close to) Gaussian, so its mass lies on a sphere and linear mixing would shrink its norm;
spherical interpolation keeps it on the shell the decoder expects.
"""

from __future__ import annotations

import torch


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation per sample over all non-batch dims; a, b: (B, ...)."""
    af, bf = a.flatten(1), b.flatten(1)
    cos = (af * bf).sum(1) / (af.norm(dim=1) * bf.norm(dim=1)).clamp_min(eps)
    theta = torch.acos(cos.clamp(-1 + eps, 1 - eps))[:, None]
    out = (torch.sin((1 - t) * theta) * af + torch.sin(t * theta) * bf) / torch.sin(theta)
    return out.view_as(a)
