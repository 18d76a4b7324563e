"""Preprocessed data shards: Parquet files of clip or image rows, with a JSON sidecar per shard.

    <out>/clips/part-<hash>.parquet   accepted clip rows (schema in DESIGN.md "Clip shards")
    <out>/clips/part-<hash>.json      the shard's done-marker: items it covers, its rejects, timings
    <out>/images/…                    the same for image rows
    <out>/manifest.json, rejects.csv  rebuilt from the sidecars at the end of every run

A shard is published in two atomic writes — Parquet first, then its sidecar — and only sidecars count,
so a crash never leaves a half shard that readers would see. An input is done when the sidecars hold
all of its segments (accepted or rejected): re-running a job skips it, and a crash costs at most the
shards that were in flight. Arrays are stored as ``.npy`` bytes, readable from any language with a
NumPy reader; frames and images as encoded JPEG/PNG.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from fet import storage
from fet.data.clip_folder import ClipRecord

KINDS = ("clips", "images")
# per-row bookkeeping that travels with rows between pipeline stages but is not stored in the Parquet
BOOKKEEPING = ("reject_reason", "reject_detail", "input", "item_segments")
TIMING_PREFIX = "t_"
# The reason of a row whose input could not be read for a cause outside it: storage that could not be
# reached or refused (an S3 outage, expired credentials, a permission). Such a row is not a verdict on the
# input: it is not stored and does not mark the input done, so the next run of the job tries it again.
UNREACHABLE = "unreachable"
CLIP_ARRAYS = ("audio", "audio_features", "landmarks", "transform", "blendshapes", "pose", "face_found")
REJECT_FIELDS = ("source", "item_id", "clip_id", "input", "reason", "detail")
# (shards, kind) → its sidecars, read once while ``one_listing`` holds it; None outside
_LISTED: ContextVar[dict[tuple[str, str], list[dict[str, Any]]] | None] = ContextVar("fet_shard_listing", default=None)


class ShardError(ValueError):
    """Shards that are missing or do not hold what the reader needs."""


def pack(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def unpack(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def item_key(source: str, item_id: str) -> str:
    return f"{source}:{item_id}"


def _kind_dir(out: str, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"shard kind {kind!r}: expected one of {KINDS}")
    return storage.join(out, kind)


def sidecar_files(out: str, kind: str) -> list[str]:
    """The published shards of one kind, by their sidecars (a listing, nothing read)."""
    folder = _kind_dir(out, kind)
    if not storage.is_s3(folder) and not storage.exists(folder):
        return []
    names = storage.list_files(folder)
    return [f for f in names if f.rsplit("/", 1)[-1].startswith("part-") and f.endswith(".json")]


def write_shard(out: str, kind: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Publish one shard from pipeline rows (accepted and rejected, with bookkeeping fields) → summary.
    Rows whose input could not be read for a cause outside it (``UNREACHABLE``) are left out, so their
    inputs stay to do; the summary counts them (``retry``) and keeps the first one's message."""
    retry = [r for r in rows if r["reject_reason"] == UNREACHABLE]
    rows = [r for r in rows if r["reject_reason"] != UNREACHABLE]
    summary = _write_shard(out, kind, rows) if rows else {"shard": "", "rows": 0, "rejects": 0}
    return summary | {"retry": len(retry), "retry_detail": retry[0]["reject_detail"] if retry else ""}


def _write_shard(out: str, kind: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    ids = sorted(f"{r['source']}:{r['clip_id' if kind == 'clips' else 'image_id']}" for r in rows)
    name = "part-" + hashlib.sha1("\n".join(ids).encode()).hexdigest()[:16]
    folder = _kind_dir(out, kind)
    accepted = [r for r in rows if not r["reject_reason"]]
    rejects = [
        {
            "source": r["source"],
            "item_id": r["item_id"],
            "clip_id": r.get("clip_id", r.get("image_id", "")),
            "input": r["input"],
            "reason": r["reject_reason"],
            "detail": r["reject_detail"],
        }
        for r in rows
        if r["reject_reason"]
    ]
    timings = Counter()
    for r in rows:
        timings.update({k[len(TIMING_PREFIX) :]: float(v) for k, v in r.items() if k.startswith(TIMING_PREFIX)})
    t_write = time.perf_counter()
    if accepted:
        keep = [k for k in accepted[0] if k not in BOOKKEEPING and not k.startswith(TIMING_PREFIX)]
        table = pa.Table.from_pylist([{k: r[k] for k in keep} for r in accepted])
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        storage.write_bytes(storage.join(folder, f"{name}.parquet"), buf.getvalue())
    items: dict[str, int] = {}
    segments: dict[str, list[str]] = {}
    for r in rows:
        key = item_key(r["source"], r["item_id"])
        items[key] = int(r["item_segments"])
        segments.setdefault(key, []).append(r.get("clip_id", r.get("image_id", "")))
    sidecar = {
        "shard": f"{name}.parquet" if accepted else None,
        "kind": kind,
        "rows": len(accepted),
        "ids": [r.get("clip_id", r.get("image_id")) for r in accepted],
        "splits": dict(Counter(r["split"] for r in accepted)),
        "seconds": sum(r.get("num_frames", 0) / r.get("fps", 25) for r in accepted) if kind == "clips" else 0.0,
        "items": items,  # item key → how many segments the item has in total
        "segments": segments,  # item key → the segments (accepted or rejected) this shard holds
        "rejects": rejects,
        "timings": {**timings, "write": timings["write"] + time.perf_counter() - t_write},
    }
    storage.write_text(storage.join(folder, f"{name}.json"), json.dumps(sidecar, indent=1))
    return {"shard": name, "rows": len(accepted), "rejects": len(rejects)}


def read_sidecars(out: str, kind: str) -> list[dict[str, Any]]:
    listed = _LISTED.get()
    if listed is None:  # outside ``one_listing``: read every time
        listed = {}
    if (out, kind) not in listed:
        listed[(out, kind)] = [json.loads(t) for t in storage.read_texts(sidecar_files(out, kind))]
    return list(listed[(out, kind)])


@contextmanager
def one_listing() -> Iterator[None]:
    """Within it, the shards of each (folder, kind) are listed, and their sidecars read, once: every check and
    read of them in this thread sees that one listing. For a driver that checks shards and then reads them (the
    training and evaluation jobs): each check would otherwise read every sidecar again, and a shard published
    meanwhile could be counted by one check and not the next. Not for preprocessing, which adds shards as it goes."""
    token = _LISTED.set({}) if _LISTED.get() is None else None  # nested: the outer listing holds
    try:
        yield
    finally:
        if token is not None:
            _LISTED.reset(token)


@dataclass
class Progress:
    """What earlier runs published: inputs complete, and segments of inputs cut short by a crash."""

    done: set[str] = field(default_factory=set)  # item keys
    partial: dict[str, set[str]] = field(default_factory=dict)  # item key → published segment ids


def scan_progress(out: str, kind: str) -> Progress:
    expected: dict[str, int] = {}
    seen: dict[str, set[str]] = {}
    for side in read_sidecars(out, kind):
        expected.update(side["items"])
        for key, ids in side["segments"].items():
            seen.setdefault(key, set()).update(ids)
    done = {k for k, n in expected.items() if len(seen.get(k, ())) >= n}
    return Progress(done, {k: v for k, v in seen.items() if k not in done})


def manifest_uri(out: str) -> str:
    return storage.join(out, "manifest.json")


def write_manifest(out: str) -> dict[str, Any]:
    """Rebuild ``manifest.json`` and ``rejects.csv`` from every shard sidecar under ``out``."""
    manifest: dict[str, Any] = {"format": 1}
    all_rejects: list[dict] = []
    for kind in KINDS:
        sides = read_sidecars(out, kind)
        if not sides:
            continue
        timings: Counter = Counter()
        for s in sides:
            timings.update(s["timings"])
        splits: Counter = Counter()
        for s in sides:
            splits.update(s["splits"])
        rejects = [r for s in sides for r in s["rejects"]]
        all_rejects += rejects
        manifest[kind] = {
            "shards": sorted(s["shard"] for s in sides if s["shard"]),
            "rows": sum(s["rows"] for s in sides),
            "splits": dict(splits),
            "seconds": round(sum(s["seconds"] for s in sides), 3),
            "inputs": len({k for s in sides for k in s["items"]}),
            "rejects": len(rejects),
            "reject_reasons": dict(Counter(r["reason"] for r in rejects)),
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REJECT_FIELDS)
    writer.writeheader()
    writer.writerows(sorted(all_rejects, key=lambda r: (r["source"], r["clip_id"])))
    storage.write_text(storage.join(out, "rejects.csv"), buf.getvalue())
    storage.write_text(manifest_uri(out), json.dumps(manifest, indent=2))
    return manifest


def read_rejects(out: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(storage.read_text(storage.join(out, "rejects.csv")))))


def _published(out: str, kind: str) -> list[dict[str, Any]]:
    """The sidecars of the published shards of one kind; ``ShardError`` when there are none."""
    sides = [s for s in read_sidecars(out, kind) if s["shard"]]
    if not sides:
        raise ShardError(f"{out}: no {kind} shards; run the preprocessing job (python -m ray_jobs.preprocess)")
    return sides


def shard_files(out: str, kind: str) -> list[str]:
    """The published Parquet files of one kind (what ``ray.data.read_parquet`` takes)."""
    return sorted(storage.join(_kind_dir(out, kind), s["shard"]) for s in _published(out, kind))


def split_counts(out: str, kind: str) -> dict[str, int]:
    """Published rows of ``kind`` per split, by the sidecars (no shard is read); ``ShardError`` when there
    are no shards of that kind."""
    counts: Counter = Counter()
    for side in _published(out, kind):
        counts.update(side["splits"])
    return dict(counts)


def split_rows(out: str, kind: str, split: str) -> int:
    """How many published rows of ``kind`` are in ``split``, by the sidecars (no shard is read)."""
    return split_counts(out, kind).get(split, 0)


def check_split(out: str, kind: str, split: str) -> int:
    """How many published rows of ``kind`` are in ``split``; ``ShardError`` naming the splits there are
    when none (shards of one's own made with ``test_fraction: 0`` have no test split)."""
    counts = split_counts(out, kind)
    if not counts.get(split):
        held = ", ".join(f"{n} in {k!r}" for k, n in sorted(counts.items()))
        raise ShardError(f"{out}: no {kind} in split {split!r}; the shards hold {held}; choose one of them")
    return counts[split]


def read_rows(
    out: str, kind: str, split: str | None = None, columns: list[str] | None = None, concurrent: bool = False
) -> Iterator[dict[str, Any]]:
    """Rows of every shard of one kind (optionally one split), shard by shard, as plain dicts. With
    ``columns``, only their parts of each file are read (a clip shard's frames are most of its bytes).
    ``concurrent``, for a whole pass over a few small columns: the files are read ``storage.each``'s
    way, several at a time, and all held before the first row is given."""

    def read(f: str) -> pa.Table:
        if columns is None:
            table = pq.read_table(io.BytesIO(storage.read_bytes(f)))
        else:
            with storage.RangeReader(f) as source:
                table = pq.ParquetFile(source).read(columns=columns)
        return table if split is None else table.filter(pc.equal(table["split"], split))

    files = shard_files(out, kind)
    for table in storage.each(read, files) if concurrent else map(read, files):
        yield from table.to_pylist()


def stored_row_bytes(out: str, kind: str, columns: list[str]) -> float:
    """The mean bytes a row of ``kind`` takes in ``columns`` as the shard files store them uncompressed (about
    what a reader holds of it as Arrow), over every split; read from the files' footers alone."""
    size = rows = 0
    for meta in storage.each(_footer, shard_files(out, kind)):
        rows += meta.num_rows
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                if chunk.path_in_schema.split(".")[0] in columns:  # a list column's path is name.list.element
                    size += chunk.total_uncompressed_size
    return size / rows if rows else 0.0


def _footer(uri: str) -> pq.FileMetaData:
    with storage.RangeReader(uri) as source:
        return pq.ParquetFile(source).metadata


def clip_record(row: dict) -> ClipRecord:
    """A clip-shard row → ``ClipRecord`` (frames decoded to (T, S, S, 3) uint8; audio, landmarks and
    transforms unpacked; precomputed audio features and their encoder kept)."""
    frames = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in row["frames"]])
    return ClipRecord(
        clip_id=row["clip_id"],
        speaker=row["speaker"],
        frames=frames,
        audio=unpack(row["audio"]),
        landmarks=unpack(row["landmarks"]),
        transform=unpack(row["transform"]),
        fps=int(row["fps"]),
        features=unpack(row["audio_features"]).astype(np.float32) if row["audio_features"] else None,
        encoder=row["audio_encoder"] or None,
    )
