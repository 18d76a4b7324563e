"""Adapters for face-image data sets (each returns ``ImageItem``s).

ffhq              <root>/**/<NNNNN>.png                      no attribute labels (-1)
celeba_hq         <root>/<N>.jpg + CelebAMask-HQ-attribute-anno.txt (``attributes``; looked for
                  next to ``root`` when not given)
synthtalk_images  <root>/<split>/<NNNNNN>.png + <root>/../CelebAMask-HQ-attribute-anno.txt;
                  already aligned crops
"""

from __future__ import annotations

from pathlib import PurePosixPath

import numpy as np

from fet import storage
from fet.data.celeba_attributes import read_celeba_attributes
from fet.data.sources.common import ImageItem, SourceError, relative, split_for
from fet.images import IMAGE_SUFFIXES

ANNOTATION_FILE = "CelebAMask-HQ-attribute-anno.txt"


def _images(root: str) -> list[str]:
    return [f for f in storage.list_files(root) if f.lower().endswith(IMAGE_SUFFIXES)]


def _items(root: str, source: str, labels: dict[str, np.ndarray] | None, val_fraction: float,
           test_fraction: float, aligned: bool = False) -> list[ImageItem]:  # fmt: skip
    items = []
    for image in _images(root):
        rel = relative(image, root)
        name = PurePosixPath(rel).name
        split = split_for(name, rel, val_fraction, test_fraction)
        item = ImageItem(PurePosixPath(rel).with_suffix("").as_posix(), source, split, image, aligned=aligned)
        if labels is not None:
            if name not in labels:
                raise SourceError(f"{image}: no row for {name!r} in the attribute file")
            item.attributes = labels[name]
        items.append(item)
    return items


def _sibling(root: str, name: str) -> str | None:
    parent = root.rstrip("/").rsplit("/", 1)[0] if "/" in root.rstrip("/") else "."
    for candidate in (storage.join(root, name), storage.join(parent, name)):
        if storage.exists(candidate):
            return candidate
    return None


def list_ffhq(root: str, attributes: str | None = None, val_fraction: float = 0.05,
              test_fraction: float = 0.05) -> list[ImageItem]:  # fmt: skip
    labels = read_celeba_attributes(attributes) if attributes else None
    return _items(root, "ffhq", labels, val_fraction, test_fraction)


def list_celeba_hq(root: str, attributes: str | None = None, val_fraction: float = 0.05,
                   test_fraction: float = 0.05) -> list[ImageItem]:  # fmt: skip
    attributes = attributes or _sibling(root, ANNOTATION_FILE)
    if attributes is None:
        raise SourceError(f"{root}: CelebA-HQ needs {ANNOTATION_FILE}; set source.attributes to its path")
    return _items(root, "celeba_hq", read_celeba_attributes(attributes), val_fraction, test_fraction)


def list_synthtalk_images(root: str, attributes: str | None = None, val_fraction: float = 0.05,
                          test_fraction: float = 0.05) -> list[ImageItem]:  # fmt: skip
    attributes = attributes or _sibling(root, ANNOTATION_FILE)
    labels = read_celeba_attributes(attributes) if attributes else None
    return _items(root, "synthtalk_images", labels, val_fraction, test_fraction, aligned=True)
