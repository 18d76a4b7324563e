"""Full-reference image quality: PSNR and SSIM.

PSNR = 10 log10(R² / MSE) for data range R. SSIM follows Wang, Bovik, Sheikh & Simoncelli, "Image
quality assessment: from error visibility to structural similarity", IEEE TIP 2004: local statistics
under an 11×11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03, population (not sample) covariances,
averaged over the positions where the window lies inside the image, then over colour channels. With
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False`` scikit-image computes the same number.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.ndimage import correlate1d

SSIM_SIGMA, SSIM_RADIUS = 1.5, 5  # radius = int(3.5 σ + 0.5): the Gaussian truncated at 3.5 σ
K1, K2 = 0.01, 0.03


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB over a whole batch; default range 2 for images in [-1, 1]."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _gaussian_window() -> np.ndarray:
    x = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    w = np.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return w / w.sum()


def _blur(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter of (N, H, W), kept where the window lies inside: (N, H − 10, W − 10)."""
    x = correlate1d(correlate1d(x, w, axis=1), w, axis=2)
    r = SSIM_RADIUS
    return x[:, r:-r, r:-r]


def ssim_per_image(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """Mean SSIM of each image pair: (N, H, W, C) or (N, H, W) arrays → (N,). Images need H, W ≥ 11."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"ssim: image shapes differ, {x.shape} vs {y.shape}")
    if x.ndim == 3:
        x, y = x[..., None], y[..., None]
    if x.ndim != 4 or min(x.shape[1:3]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"ssim: expected (N, H, W[, C]) images of at least 11×11 pixels, got {np.shape(a)}")
    n, h, wd, c = x.shape
    x = x.transpose(0, 3, 1, 2).reshape(n * c, h, wd)  # every channel on its own
    y = y.transpose(0, 3, 1, 2).reshape(n * c, h, wd)
    w = _gaussian_window()
    mx, my = _blur(x, w), _blur(y, w)
    vx = _blur(x * x, w) - mx * mx
    vy = _blur(y * y, w) - my * my
    cxy = _blur(x * y, w) - mx * my
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(axis=(1, 2)).reshape(n, c).mean(1)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM of one image pair, (H, W[, C]) arrays."""
    return float(ssim_per_image(np.asarray(a)[None], np.asarray(b)[None], data_range)[0])


def psnr_per_image(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """PSNR of each image pair, (N, ...) arrays → (N,) dB (inf where identical)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    mse = (d.reshape(d.shape[0], -1) ** 2).mean(1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)
