"""Landmark distance, M-LMD and F-LMD (Chen et al., "Lip movements generation at a glance", ECCV 2018).

On dlib's 68-point landmarks of generated and ground-truth frames: each frame's point set is centred on
its mean (so a global shift of the face does not count), the Euclidean distance of corresponding points
is averaged over the points and then over the frames — as RAD-NeRF's ``LMDMeter`` computes it. M-LMD
uses the mouth (points 48–67), F-LMD all 68 points. Units are pixels of the frames the landmarks were
found in; frames where either landmark set is missing (NaN) are left out.
"""

from __future__ import annotations

import numpy as np

MOUTH = slice(48, 68)
NUM_POINTS = 68


def landmark_distance(generated: np.ndarray, truth: np.ndarray, region: str = "face") -> float:
    """(T, 68, 2) landmarks of generated and ground-truth frames → mean centred point distance (NaN if no
    frame has both)."""
    g, t = np.asarray(generated, np.float64), np.asarray(truth, np.float64)
    if g.shape != t.shape or g.ndim != 3 or g.shape[1:] != (NUM_POINTS, 2):
        raise ValueError(f"landmark distance: expected two (T, 68, 2) arrays, got {g.shape} and {t.shape}")
    if region == "mouth":
        g, t = g[:, MOUTH], t[:, MOUTH]
    elif region != "face":
        raise ValueError(f"landmark distance: region {region!r}; expected 'mouth' or 'face'")
    keep = np.isfinite(g).all((1, 2)) & np.isfinite(t).all((1, 2))
    if not keep.any():
        return float("nan")
    g, t = g[keep], t[keep]
    g = g - g.mean(1, keepdims=True)
    t = t - t.mean(1, keepdims=True)
    return float(np.linalg.norm(g - t, axis=-1).mean())


def m_lmd(generated: np.ndarray, truth: np.ndarray) -> float:
    """Mouth landmark distance (points 48–67)."""
    return landmark_distance(generated, truth, "mouth")


def f_lmd(generated: np.ndarray, truth: np.ndarray) -> float:
    """Face landmark distance (all 68 points)."""
    return landmark_distance(generated, truth, "face")
