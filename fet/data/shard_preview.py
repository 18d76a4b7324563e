"""Pictures of what preprocessing wrote: clip frames with their landmarks drawn over them, and a grid
of image crops — written next to the manifest so a person can check the crops and landmarks at a glance."""

from __future__ import annotations

import io
import itertools

import numpy as np
from PIL import Image

from fet import storage
from fet.data import shards
from fet.images import encode_png, image_grid
from fet.landmarks.landmark_map import draw_landmark_map


def overlay(frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Draw the landmark contours (normalised (478, ≥2)) over an (S, S, 3) frame."""
    drawn = draw_landmark_map(points, frame.shape[0])
    mask = drawn.max(-1, keepdims=True) > 0
    return np.where(mask, drawn, frame)


def clip_preview(row: dict, frames: int = 4) -> np.ndarray:
    """``frames`` evenly spaced frames of one clip row with landmarks overlaid, side by side."""
    landmarks = shards.unpack(row["landmarks"])
    idx = np.linspace(0, len(row["frames"]) - 1, frames).round().astype(int)
    pictures = [np.asarray(Image.open(io.BytesIO(row["frames"][i])).convert("RGB")) for i in idx]  # only these
    return np.concatenate([overlay(p, landmarks[i]) for p, i in zip(pictures, idx)], axis=1)


def write_previews(out: str, clips: int = 6, images: int = 16) -> list[str]:
    """``preview_clips.png`` (rows of clips, landmarks overlaid) and ``preview_images.png``."""
    written = []
    try:
        rows = list(itertools.islice(shards.read_rows(out, "clips"), clips))
    except shards.ShardError:
        rows = []
    if rows:
        size = max(r["size"] for r in rows)
        strips = [np.asarray(Image.fromarray(clip_preview(r)).resize((4 * size, size))) for r in rows]
        uri = storage.join(out, "preview_clips.png")
        storage.write_bytes(uri, encode_png(Image.fromarray(np.concatenate(strips, axis=0))))
        written.append(uri)
    try:
        cols = ["image", "size"]
        pics = [r for r in itertools.islice(shards.read_rows(out, "images", columns=cols), images)]
    except shards.ShardError:
        pics = []
    if pics:
        size = max(p["size"] for p in pics)
        arr = np.stack(
            [np.asarray(Image.open(io.BytesIO(p["image"])).convert("RGB").resize((size, size))) for p in pics]
        )
        uri = storage.join(out, "preview_images.png")
        storage.write_bytes(uri, encode_png(image_grid(arr, rows=max(1, int(np.sqrt(len(arr)))))))
        written.append(uri)
    return written
