"""Landmark maps: the 2-D landmarks of a frame drawn as coloured contours (the PoseGuider's input K).

Each facial part has its own colour and the outer and inner lip contours differ, so the map tells the
PoseGuider the mouth opening unambiguously (AniPortrait draws its pose images the same way). Lines are
anti-aliased and their width grows with the map size, so a 32 px and a 512 px map show the same face.
"""

from __future__ import annotations

import functools
import itertools

import cv2
import numpy as np
import torch

from fet.landmarks.face_mesh import NUM_LANDMARKS, contours

COLOURS: dict[str, tuple[int, int, int]] = {  # RGB
    "face_oval": (200, 200, 200),
    "left_eyebrow": (255, 220, 0),
    "right_eyebrow": (255, 220, 0),
    "left_eye": (0, 220, 0),
    "right_eye": (0, 220, 0),
    "left_iris": (0, 200, 255),
    "right_iris": (0, 200, 255),
    "nose": (255, 140, 0),
    "lips_outer": (255, 0, 0),
    "lips_inner": (60, 60, 255),
}


@functools.lru_cache(maxsize=1)
def _segments() -> list[tuple[tuple[int, int, int], np.ndarray]]:
    """(colour, vertex-index pairs (E, 2)) per part, lips split into outer and inner loops."""
    c = dict(contours())
    outer, inner = c.pop("lips")
    c["lips_outer"], c["lips_inner"] = [outer], [inner]
    out = []
    for name, colour in COLOURS.items():
        pairs = []
        for chain in c[name]:
            closed = name != "nose" and len(chain) > 2
            ring = [*chain, chain[0]] if closed else chain
            pairs += list(itertools.pairwise(ring))
        out.append((colour, np.asarray(pairs, np.int64)))
    return out


def draw_landmark_map(points: np.ndarray, size: int, thickness: int | None = None) -> np.ndarray:
    """Landmarks (478, ≥2) in [0, 1] image coordinates → (size, size, 3) uint8 RGB map on black."""
    if points.ndim != 2 or points.shape[0] != NUM_LANDMARKS or points.shape[1] < 2:
        raise ValueError(f"points: expected ({NUM_LANDMARKS}, 2) normalised landmarks, got {points.shape}")
    thickness = thickness or max(1, round(size / 128))
    shift = 4  # sub-pixel precision for cv2's fixed-point coordinates
    xy = np.round(points[:, :2] * size * (1 << shift)).astype(np.int32)
    canvas = np.zeros((size, size, 3), np.uint8)
    for colour, pairs in _segments():
        cv2.polylines(canvas, list(xy[pairs]), False, colour, thickness, cv2.LINE_AA, shift)
    return canvas


def landmark_maps(points: np.ndarray, size: int) -> torch.Tensor:
    """(T, 478, ≥2) normalised landmarks → (T, 3, size, size) float maps in [0, 1]."""
    maps = np.stack([draw_landmark_map(p, size) for p in points])  # (T, S, S, 3)
    return torch.from_numpy(maps).permute(0, 3, 1, 2).float().div_(255.0)
