"""Dataset adapters: readers of the folder layouts people actually have (local or ``s3://``), each
turning one into a list of work items for preprocessing. Items are small and picklable: they name
where the media is; nothing is decoded here.

    clips:  hdtf, voxceleb2, vfhq, synthtalk         → ClipItem
    images: ffhq, celeba_hq, synthtalk_images        → ImageItem

Splits are by a stable hash of the speaker (clips) or image name, so the same person never lands in
two splits and adding files never moves existing ones; a layout's own ``train/val/test`` folders win.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fet.data.sources.clips import list_hdtf, list_synthtalk_clips, list_vfhq, list_voxceleb2
from fet.data.sources.common import ClipItem, ImageItem, SourceError, item_from_dict, item_to_dict
from fet.data.sources.images import list_celeba_hq, list_ffhq, list_synthtalk_images
from fet.storage import StorageError

CLIP_SOURCES: dict[str, Callable[..., list[ClipItem]]] = {
    "hdtf": list_hdtf,
    "voxceleb2": list_voxceleb2,
    "vfhq": list_vfhq,
    "synthtalk": list_synthtalk_clips,
}
IMAGE_SOURCES: dict[str, Callable[..., list[ImageItem]]] = {
    "ffhq": list_ffhq,
    "celeba_hq": list_celeba_hq,
    "synthtalk_images": list_synthtalk_images,
}


@dataclass
class SourceConfig:
    """One input data set: ``kind`` picks the adapter, ``root`` is a folder or ``s3://`` prefix."""

    kind: str = "synthtalk"
    root: str = "data/synthtalk/clips"
    audio_root: str | None = None  # VoxCeleb2: the separate aac/ tree with .m4a files
    attributes: str | None = None  # CelebA-HQ: CelebAMask-HQ-attribute-anno.txt
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    limit: int | None = None  # first N items (after sorting), for trials
    options: dict = field(default_factory=dict)

    @property
    def is_clips(self) -> bool:
        return self.kind in CLIP_SOURCES

    def validate(self, where: str = "source") -> None:
        if self.kind not in CLIP_SOURCES and self.kind not in IMAGE_SOURCES:
            known = sorted([*CLIP_SOURCES, *IMAGE_SOURCES])
            raise SourceError(f"{where}.kind: unknown data set {self.kind!r}; expected one of {known}")
        if not 0 <= self.val_fraction + self.test_fraction < 1:
            raise SourceError(f"{where}: val_fraction + test_fraction must be in [0, 1)")


def list_items(cfg: SourceConfig) -> list[ClipItem] | list[ImageItem]:
    """The work items of one source, sorted by id (so ``limit`` and sharding are reproducible)."""
    cfg.validate()
    fractions = {"val_fraction": cfg.val_fraction, "test_fraction": cfg.test_fraction}
    try:
        if cfg.is_clips:
            items = CLIP_SOURCES[cfg.kind](cfg.root, audio_root=cfg.audio_root, **fractions)
        else:
            items = IMAGE_SOURCES[cfg.kind](cfg.root, attributes=cfg.attributes, **fractions)
    except StorageError as e:
        raise SourceError(f"{cfg.kind} source: {e}; expected a folder or s3:// prefix holding the data set") from e
    items = sorted(items, key=lambda it: it.item_id)
    if not items:
        raise SourceError(f"{cfg.root}: no inputs found for a {cfg.kind} layout")
    return items[: cfg.limit] if cfg.limit is not None else items


__all__ = [
    "CLIP_SOURCES",
    "IMAGE_SOURCES",
    "ClipItem",
    "ImageItem",
    "SourceConfig",
    "SourceError",
    "item_from_dict",
    "item_to_dict",
    "list_items",
]
