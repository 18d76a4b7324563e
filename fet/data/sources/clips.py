"""Adapters for talking-head video data sets (each returns ``ClipItem``s; nothing is decoded here).

hdtf       <root>/**/<Name>_<NNN>.mp4                   speaker = file name without the index
voxceleb2  <root>/**/id<NNNNN>/<video>/<NNNNN>.mp4       speaker = the id folder; audio in the mp4,
           or a separate tree <audio_root>/id…/<video>/<NNNNN>.m4a (the official ``aac/`` download)
vfhq       <root>/<clip folder>/<frame>.png|jpg          frame folders without audio; speaker = the
           source video id in ``Clip+<video>+P…`` names
synthtalk  <root>/<split>/<clip>.mp4 + <clip>.npz        ground-truth landmarks in the sidecar
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import PurePosixPath

from fet import storage
from fet.data.sources.common import VIDEO_SUFFIXES, ClipItem, SourceError, relative, split_for
from fet.images import IMAGE_SUFFIXES

_INDEX = re.compile(r"_\d+$")
_VOX_ID = re.compile(r"^id\d+$")


def _videos(root: str) -> list[tuple[str, PurePosixPath]]:
    """(URI, path relative to ``root``) of every video file under ``root``."""
    files = [f for f in storage.list_files(root) if f.lower().endswith(VIDEO_SUFFIXES)]
    return [(f, PurePosixPath(relative(f, root))) for f in files]


def list_hdtf(root: str, audio_root: str | None = None, val_fraction: float = 0.05,
              test_fraction: float = 0.05) -> list[ClipItem]:  # fmt: skip
    items = []
    for video, rel in _videos(root):
        speaker = _INDEX.sub("", rel.stem)
        items.append(
            ClipItem(rel.stem, "hdtf", speaker, split_for(speaker, str(rel), val_fraction, test_fraction), video)
        )
    return items


def list_voxceleb2(root: str, audio_root: str | None = None, val_fraction: float = 0.05,
                   test_fraction: float = 0.05) -> list[ClipItem]:  # fmt: skip
    items = []
    for video, rel in _videos(root):
        parts = rel.parts
        ids = [i for i, p in enumerate(parts) if _VOX_ID.match(p)]
        if not ids or len(parts) - ids[-1] != 3:
            raise SourceError(f"{video}: expected VoxCeleb2's id<NNNNN>/<video>/<NNNNN>.mp4 layout under {root}")
        speaker, youtube, stem = parts[ids[-1]], parts[-2], PurePosixPath(parts[-1]).stem
        audio = None
        if audio_root:
            audio = storage.join(audio_root, speaker, youtube, f"{stem}.m4a")
        item_id = f"{speaker}/{youtube}/{stem}"
        split = split_for(speaker, str(rel), val_fraction, test_fraction)
        items.append(ClipItem(item_id, "voxceleb2", speaker, split, video, audio=audio))
    return items


def list_vfhq(root: str, audio_root: str | None = None, val_fraction: float = 0.05,
              test_fraction: float = 0.05, fps: float = 25.0) -> list[ClipItem]:  # fmt: skip
    folders: dict[str, int] = defaultdict(int)
    for f in storage.list_files(root):
        if f.lower().endswith(IMAGE_SUFFIXES):
            folders[f.rsplit("/", 1)[0]] += 1
    items = []
    for folder in sorted(folders):
        rel = relative(folder + "/x", root)
        name = PurePosixPath(folder).name
        parts = name.split("+")
        speaker = parts[1] if len(parts) > 2 and parts[0] == "Clip" else name
        split = split_for(speaker, rel, val_fraction, test_fraction)
        items.append(ClipItem(name, "vfhq", speaker, split, folder, fps=fps))
    return items


def list_synthtalk_clips(root: str, audio_root: str | None = None, val_fraction: float = 0.05,
                         test_fraction: float = 0.05) -> list[ClipItem]:  # fmt: skip
    files = set(storage.list_files(root))
    items = []
    for video in sorted(f for f in files if f.endswith(".mp4")):
        sidecar = video[: -len(".mp4")] + ".npz"
        if sidecar not in files:
            continue
        rel = relative(video, root)
        stem = PurePosixPath(rel).stem
        split = split_for(stem, rel, val_fraction, test_fraction)
        items.append(ClipItem(stem, "synthtalk", stem, split, video, sidecar=sidecar))
    return items
