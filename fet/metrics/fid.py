"""Fréchet Inception Distance (Heusel et al., NeurIPS 2017; the Fréchet distance of Dowson & Landau 1982).

FID = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½) between Gaussians fitted to Inception pool features
(``fet.metrics.inception``) of real and generated images — computed as pytorch-fid does: ``scipy.linalg.
sqrtm``, an ε·I regulariser when the product is singular, and the real part when round-off leaves a
small imaginary one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg

from fet.metrics.inception import FIDInception


@dataclass
class FeatureStats:
    mean: np.ndarray  # (D,)
    cov: np.ndarray  # (D, D), unbiased sample covariance
    count: int


def feature_stats(features: np.ndarray) -> FeatureStats:
    """(N, D) features (N ≥ 2) → their mean and covariance."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"FID: expected (N ≥ 2, D) features, got shape {f.shape}")
    return FeatureStats(f.mean(0), np.cov(f, rowvar=False), f.shape[0])


def frechet_distance(a: FeatureStats, b: FeatureStats, eps: float = 1e-6) -> float:
    """Fréchet distance between the Gaussians N(a.mean, a.cov) and N(b.mean, b.cov)."""
    diff = a.mean - b.mean
    covmean = linalg.sqrtm(a.cov @ b.cov)
    if not np.isfinite(covmean).all():
        offset = np.eye(a.cov.shape[0]) * eps
        covmean = linalg.sqrtm((a.cov + offset) @ (b.cov + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: matrix square root has an imaginary part {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * np.trace(covmean))


@torch.no_grad()
def inception_features(model: FIDInception, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB → (N, 2048) float32 pool features."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).to(device)
        out.append(model(x.permute(0, 3, 1, 2).float() / 255.0).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2048), np.float32)


def fid(real: np.ndarray, generated: np.ndarray) -> float:
    """FID between two sets of (N, 2048) Inception features."""
    return frechet_distance(feature_stats(real), feature_stats(generated))
