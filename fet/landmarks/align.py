"""Aligned square face crops from a detection (the framing of FFHQ-style training crops).

The crop is centred on the landmarks' bounding box and ``scale`` times its larger side; parts outside
the photo are filled by edge replication, so faces near a border still get a full square.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

DEFAULT_SCALE = 1.9  # the face oval then spans about half the crop, as in SynthTalk and HDTF crops


def face_box(points: np.ndarray, width: int, height: int, scale: float = DEFAULT_SCALE) -> tuple[float, float, float]:
    """Normalised landmarks (N, ≥2) → square box (x0, y0, side) in pixels of a width×height image."""
    xy = points[:, :2] * np.array([width, height])
    lo, hi = xy.min(0), xy.max(0)
    centre = (lo + hi) / 2
    side = float(scale * max(hi - lo))
    return float(centre[0] - side / 2), float(centre[1] - side / 2), side


def crop_square(rgb: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
    """Cut ``box`` from (H, W, 3) uint8 (edge-padded where it leaves the image) → (size, size, 3)."""
    x0, y0, side = box
    h, w = rgb.shape[:2]
    pad = int(np.ceil(max(0.0, -x0, -y0, x0 + side - w, y0 + side - h))) + 1
    padded = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge") if pad else rgb
    left, top = x0 + pad, y0 + pad
    crop = Image.fromarray(padded).crop((round(left), round(top), round(left + side), round(top + side)))
    return np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS))
