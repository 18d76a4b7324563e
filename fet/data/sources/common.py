"""Work items and the split rule shared by every dataset adapter."""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

SPLIT_DIRS = ("train", "val", "test")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")


class SourceError(ValueError):
    """A data set folder that does not match the layout its adapter reads."""


@dataclass
class ClipItem:
    item_id: str  # unique within the source; shard rows use it (plus a segment suffix) as clip_id
    source: str
    speaker: str
    split: str
    video: str  # an mp4 (or other container) path/URI, or a folder of frame images (VFHQ)
    audio: str | None = None  # a separate audio file; None = the video's own audio track (if any)
    sidecar: str | None = None  # SynthTalk: .npz with ground-truth landmarks and transforms
    fps: float | None = None  # frame folders: their frame rate


@dataclass
class ImageItem:
    item_id: str
    source: str
    split: str
    image: str
    attributes: np.ndarray = field(default_factory=lambda: np.full(40, -1, np.int8))  # CelebA order, 1/0/-1
    aligned: bool = False  # already an aligned face crop (SynthTalk): no detection crop


def item_to_dict(item: ClipItem | ImageItem) -> dict:
    """A work item as plain JSON-able values (what crosses process boundaries)."""
    d = dataclasses.asdict(item)
    if isinstance(item, ImageItem):
        d["attributes"] = [int(a) for a in item.attributes]
    return {"type": type(item).__name__, **d}


def item_from_dict(d: dict) -> ClipItem | ImageItem:
    d = dict(d)
    kind = d.pop("type")
    if kind == "ImageItem":
        return ImageItem(**{**d, "attributes": np.asarray(d["attributes"], np.int8)})
    return ClipItem(**d)


def split_for(key: str, rel_path: str, val_fraction: float, test_fraction: float) -> str:
    """``train``/``val``/``test``: a ``train|val|test`` folder in ``rel_path`` wins, else a stable hash of
    ``key`` (the speaker for clips, so one person is never in two splits)."""
    for part in PurePosixPath(rel_path).parts[:-1]:
        if part in SPLIT_DIRS:
            return part
    u = (zlib.crc32(key.encode()) % 100_000) / 100_000
    return "val" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"


def relative(uri: str, root: str) -> str:
    return uri[len(root.rstrip("/")) + 1 :]
