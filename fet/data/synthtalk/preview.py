"""Preview pictures of the SynthTalk world: identities × attributes, and a clip strip with landmarks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from fet.data.synthtalk.identity import sample_identity
from fet.data.synthtalk.world import base_expression, item_rng, make_clip, render
from fet.landmarks.face_mesh import contours

GRID_ATTRIBUTES = (
    "Eyeglasses", "Smiling", "Mouth_Slightly_Open", "Blond_Hair", "Black_Hair", "Gray_Hair", "Bald", "Bangs",
    "No_Beard", "Mustache", "Goatee", "Wearing_Hat", "Wearing_Lipstick", "Pale_Skin", "Male",
)  # fmt: skip


def attribute_grid(seed: int = 0, identities: int = 4, size: int = 96) -> Image.Image:
    """Rows: identities; columns: the identity as sampled, then with each attribute flipped."""
    rows = []
    for k in range(identities):
        ident = sample_identity(item_rng(seed, "preview", k)).with_attributes(
            Male=True, Bald=False, Brown_Hair=True, Eyeglasses=False, Wearing_Hat=False, Smiling=False,
            Mouth_Slightly_Open=False, Pale_Skin=False, Wearing_Lipstick=False, No_Beard=True, Bangs=False,
        )  # fmt: skip
        if k % 2:
            ident = ident.with_attributes(Male=False)
        pose = np.zeros(6)
        row = [render(ident, base_expression(ident), pose, size)[0]]
        for name in GRID_ATTRIBUTES:
            flipped = ident.with_attributes(**{name: not ident.has(name)})
            row.append(render(flipped, base_expression(flipped), pose, size)[0])
        rows.append(np.concatenate(row, axis=1))
    grid = np.concatenate(rows, axis=0)
    header = Image.new("RGB", (grid.shape[1], 18), "white")
    draw = ImageDraw.Draw(header)
    for j, name in enumerate(("as sampled", *[f"{n}" for n in GRID_ATTRIBUTES])):
        draw.text((j * size + 2, 3), name[:15], fill="black")
    out = Image.new("RGB", (grid.shape[1], grid.shape[0] + 18), "white")
    out.paste(header, (0, 0))
    out.paste(Image.fromarray(grid), (0, 18))
    return out


def landmark_strip(seed: int = 0, frames: int = 8, size: int = 128) -> Image.Image:
    """Evenly spaced frames of one clip, landmarks (478 points; lips in red) drawn on each."""
    clip = make_clip(seed, 0, size, 2.0)
    idx = np.linspace(0, len(clip.frames) - 1, frames).astype(int)
    tiles = []
    lips = {i for loop in contours()["lips"] for i in loop}
    for i in idx:
        img = cv2.resize(clip.frames[i], (size * 2, size * 2), interpolation=cv2.INTER_NEAREST)
        for j, (x, y, _) in enumerate(clip.landmarks[i]):
            colour = (255, 40, 40) if j in lips else (40, 255, 120) if j >= 468 else (255, 255, 255)
            cv2.circle(img, (int(x * size * 2), int(y * size * 2)), 1, colour, -1)
        tiles.append(img)
    return Image.fromarray(np.concatenate(tiles, axis=1))


def write_previews(out: Path, seed: int = 0) -> tuple[Path, Path]:
    grid, strip = out / "preview_grid.png", out / "preview_strip.png"
    attribute_grid(seed).save(grid)
    landmark_strip(seed).save(strip)
    return grid, strip
