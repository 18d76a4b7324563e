"""Face-image datasets in the layouts people have: an image folder (FFHQ) with an optional CelebA-HQ
attribute file, read from a local path or ``s3://`` prefix.

Items are ``(image (3, S, S) in [-1, 1], labels int8[40] (1/0/-1), name)``. Train/validation split is by
a stable hash of the file name (or by a ``train/``, ``val/``, ``test/`` folder when the layout has one),
so it never changes when files are added.
"""

from __future__ import annotations

import zlib
from pathlib import PurePosixPath

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from fet import storage
from fet.data.celeba_attributes import read_celeba_attributes
from fet.data.sources.common import SPLIT_DIRS
from fet.images import IMAGE_SUFFIXES, center_square, load_image, to_tensor


def split_of(name: str, val_fraction: float) -> str:
    """A file's split: its ``train/val/test`` folder if it has one, else a stable hash of its name."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    for part in parts[:-1]:
        if part in SPLIT_DIRS:
            return part
    bucket = zlib.crc32(PurePosixPath(name).name.encode()) % 10_000
    return "val" if bucket < val_fraction * 10_000 else "train"


class FaceImageDataset(Dataset):
    """Aligned face crops from ``root`` (recursively), decoded once and kept in memory as uint8."""

    def __init__(
        self,
        root: str,
        image_size: int,
        attributes: str | None = None,
        split: str | None = "train",
        val_fraction: float = 0.1,
        limit: int | None = None,
    ) -> None:
        files = [f for f in storage.list_files(root) if f.lower().endswith(IMAGE_SUFFIXES)]
        rel = {f: f[len(str(root).rstrip("/")) + 1 :] for f in files}
        if split is not None:
            files = [f for f in files if split_of(rel[f], val_fraction) == split]
        if limit is not None:
            files = files[:limit]
        if not files:
            raise ValueError(f"{root}: no {'/'.join(IMAGE_SUFFIXES)} images for split {split!r}")
        labels = read_celeba_attributes(attributes) if attributes else {}
        self.names = [rel[f] for f in files]
        self.images = np.stack(
            [
                np.asarray(center_square(load_image(f), image_size))
                for f in tqdm(files, desc=f"load {split or 'all'} images", leave=False)
            ]
        )  # (N, S, S, 3) uint8
        unknown = np.full(40, -1, np.int8)
        self.labels = np.stack([labels.get(PurePosixPath(n).name, unknown) for n in self.names])  # (N, 40)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        return to_tensor(self.images[i])[0], torch.from_numpy(self.labels[i].astype(np.int64)), self.names[i]
