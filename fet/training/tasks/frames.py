"""Decoding shard images and frames into the uint8 arrays the training tasks keep in memory."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def decode_square(data: bytes, size: int) -> np.ndarray:
    """Encoded aligned crop (PNG/JPEG bytes) → (size, size, 3) uint8, resized when the shard differs."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img)


def to_model_range(frames: np.ndarray) -> torch.Tensor:
    """(B, S, S, 3) uint8 → (B, 3, S, S) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
