"""Image I/O and conversion between PIL/numpy images and model tensors in [-1, 1]."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from fet import storage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # what image folders are scanned for


class ImageError(ValueError):
    """An image that cannot be decoded or has the wrong shape or type."""


def load_image(source: str | Path | bytes | Image.Image) -> Image.Image:
    """Decode an image by its content (not its extension) from a path, URI, bytes or PIL image → RGB.
    Decoded files are turned upright by their EXIF orientation; a PIL image is taken as it is."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    data = source if isinstance(source, bytes) else storage.read_bytes(source)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        img = ImageOps.exif_transpose(img)  # upright as viewers show it: phones store pixels as the sensor lay
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        reason = "cannot identify image format" if isinstance(e, UnidentifiedImageError) else e  # PIL's names a buffer
        raise ImageError(f"{name}: not a readable image (expected PNG, JPEG or WebP): {reason}") from e
    if img.mode.startswith("I;16") or img.mode == "I":  # 16-bit grey (PNG): PIL's own convert clips at 255
        img = Image.fromarray((np.asarray(img, np.float64) / 257).round().clip(0, 255).astype(np.uint8))
    if "A" in img.getbands() or "transparency" in img.info:  # a cut-out: on white, as viewers show it
        img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img.convert("RGBA"))
    return img.convert("RGB")


def center_square(img: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize to ``size``×``size``."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.LANCZOS)


def to_tensor(img: Image.Image | np.ndarray) -> torch.Tensor:
    """RGB uint8 image (H, W, 3) → float tensor (1, 3, H, W) in [-1, 1]."""
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ImageError(f"image: expected an RGB uint8 array (H, W, 3), got {arr.dtype} {arr.shape}")
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float().div(127.5).sub(1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Tensor (B, 3, H, W) or (3, H, W) in [-1, 1] → uint8 array (B, H, W, 3) or (H, W, 3)."""
    x = x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu()
    return (x.permute(0, 2, 3, 1) if x.ndim == 4 else x.permute(1, 2, 0)).numpy()


def to_pil(x: torch.Tensor) -> Image.Image:
    """One image tensor (3, H, W) or (1, 3, H, W) in [-1, 1] → PIL image."""
    arr = to_uint8(x[0] if x.ndim == 4 else x)
    return Image.fromarray(arr)


def check_image_batch(x: torch.Tensor, size: int, name: str = "image") -> None:
    """Raise unless ``x`` is a float tensor (B, 3, size, size) with values in [-1, 1]."""
    if not isinstance(x, torch.Tensor):
        raise ImageError(f"{name}: expected a torch.Tensor (B, 3, {size}, {size}), got {type(x).__name__}")
    if not x.is_floating_point():
        raise ImageError(f"{name}: expected a float tensor in [-1, 1], got dtype {x.dtype}")
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
        raise ImageError(f"{name}: expected shape (B, 3, {size}, {size}), got {tuple(x.shape)}")
    if x.numel() and (x.min() < -1.001 or x.max() > 1.001):
        raise ImageError(f"{name}: values must lie in [-1, 1], got [{x.min():.3f}, {x.max():.3f}]")


def image_grid(images: torch.Tensor | np.ndarray, rows: int) -> Image.Image:
    """(N, 3, H, W) tensor in [-1, 1] or (N, H, W, 3) uint8 → one PIL grid with ``rows`` rows."""
    arr = to_uint8(images) if isinstance(images, torch.Tensor) else np.asarray(images)
    n, h, w, _ = arr.shape
    cols = -(-n // rows)
    grid = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = arr[i]
    return Image.fromarray(grid)


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}


def image_format(uri: str) -> str:
    """The format a saved image takes from its name's suffix; a ``ValueError`` naming the path otherwise."""
    suffix = Path(uri.rsplit("/", 1)[-1]).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise ValueError(f"{uri}: expected a name ending in {', '.join(IMAGE_FORMATS)} (the image's format)")
    return IMAGE_FORMATS[suffix]


def save_image(img: Image.Image, uri: str) -> None:
    """Write to a local path or ``s3://`` URI (atomically), as PNG, JPEG (quality 95) or lossless WebP by
    the name's suffix."""
    fmt = image_format(uri)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))
    storage.write_bytes(uri, buf.getvalue())
