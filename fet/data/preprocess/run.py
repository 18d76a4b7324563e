"""What is left to do for a preprocessing job, and a plain single-process runner of it.

The Ray job (``ray_jobs/preprocess.py``) distributes exactly these pieces; ``run_serial`` is the
baseline it is measured against and a way to preprocess a handful of clips without a cluster.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from tqdm import tqdm

from fet.audio.features import check_audio_weights
from fet.config import ConfigError
from fet.data import shards
from fet.data.preprocess.clips import ClipPreprocessor
from fet.data.preprocess.config import PreprocessConfig
from fet.data.preprocess.images import ImagePreprocessor
from fet.data.preprocess.settings import check_settings
from fet.data.shard_preview import write_previews
from fet.data.sources import ClipItem, ImageItem, SourceConfig, SourceError, list_items
from fet.landmarks.face_mesh import face_landmarker_bytes

logger = logging.getLogger(__name__)
Work = tuple[ClipItem | ImageItem, set[str]]  # an input and the segment ids of it already published


def shard_kind(source: SourceConfig) -> str:
    return "clips" if source.is_clips else "images"


def pending(cfg: PreprocessConfig) -> list[tuple[SourceConfig, list[Work], int]]:
    """For each source: (the source, its inputs not yet complete in ``cfg.out`` with what of them is done,
    its inputs in total). Every source is listed first, and two inputs of one kind with the same id are
    refused: the shards know an input by its kind and id, so the second would pass for done, or both
    would be stored under one clip id."""
    listed = [(source, list_items(source)) for source in cfg.sources]
    where: dict[str, str] = {}
    for _, items in listed:
        for item in items:
            key, path = shards.item_key(item.source, item.item_id), getattr(item, "video", None) or item.image
            if key in where:
                raise SourceError(
                    f"{where[key]} and {path}: two {item.source} inputs with the id {item.item_id!r}; the shards "
                    "know an input by its id, so rename one (or keep the two data sets in separate runs and outs)"
                )
            where[key] = path
    return [(source, *_pending(cfg, source, items)) for source, items in listed]


def _pending(cfg: PreprocessConfig, source: SourceConfig, items: list) -> tuple[list[Work], int]:
    progress = shards.scan_progress(cfg.out, shard_kind(source))
    todo = []
    for item in items:
        key = shards.item_key(item.source, item.item_id)
        if key not in progress.done:
            todo.append((item, progress.partial.get(key, set())))
    return todo, len(items)


def check_models(cfg: PreprocessConfig) -> None:
    """ConfigError unless the models every worker loads are there and of the right kind: found by the job
    before it starts, not by each worker with a traceback."""
    try:
        face_landmarker_bytes(cfg.face_landmarker)
    except (OSError, ValueError) as e:
        raise ConfigError(f"face_landmarker: {e}") from e
    if any(source.is_clips for source in cfg.sources):
        try:
            check_audio_weights(cfg.audio_encoder)
        except (OSError, ValueError) as e:
            raise ConfigError(f"audio.path: {e}") from e


def make_processor(cfg: PreprocessConfig, kind: str, audio_features: bool = True):
    return ClipPreprocessor(cfg, audio_features) if kind == "clips" else ImagePreprocessor(cfg)


def run_serial(cfg: PreprocessConfig, progress: bool = True) -> dict[str, Any]:
    """Process every pending input of every source in this process; returns counts and stage timings."""
    stats: dict[str, Any] = {"processed": 0, "skipped": 0, "rows": 0, "rejects": 0, "retry": 0, "retry_detail": "",
                             "timings": Counter()}  # fmt: skip
    t0 = time.perf_counter()
    check_models(cfg)
    check_settings(cfg)
    for source, todo, total in pending(cfg):
        kind = shard_kind(source)
        stats["skipped"] += total - len(todo)
        if not todo:
            continue
        processor = make_processor(cfg, kind)
        buffer: list[dict] = []
        for item, skip in tqdm(todo, desc=f"{source.kind} {kind}", disable=not progress):
            buffer += processor(item, skip)
            stats["processed"] += 1
            if len(buffer) >= cfg.rows_per_shard:
                _flush(cfg, kind, buffer, stats)
        _flush(cfg, kind, buffer, stats)
    stats["manifest"] = shards.write_manifest(cfg.out)
    write_previews(cfg.out)
    stats["wall_seconds"] = time.perf_counter() - t0
    stats["timings"] = dict(stats["timings"])
    if message := retry_message(stats):
        logger.warning(message)
    return stats


def _flush(cfg: PreprocessConfig, kind: str, buffer: list[dict], stats: dict) -> None:
    if not buffer:
        return
    for r in buffer:
        for k, v in r.items():
            if k.startswith(shards.TIMING_PREFIX):
                stats["timings"][k[len(shards.TIMING_PREFIX) :]] += v
    t = time.perf_counter()
    summary = shards.write_shard(cfg.out, kind, buffer)
    stats["timings"]["write"] += time.perf_counter() - t  # the shard's sidecar records the same
    add_summary(stats, summary)
    buffer.clear()


def add_summary(stats: dict[str, Any], summary: dict[str, Any]) -> None:
    """Count one shard's summary (``shards.write_shard``) into a run's ``stats``."""
    stats["rows"] += summary["rows"]
    stats["rejects"] += summary["rejects"]
    stats["retry"] += summary["retry"]
    stats["retry_detail"] = stats["retry_detail"] or summary["retry_detail"]


def retry_message(stats: dict[str, Any]) -> str:
    """What a run that could not read some inputs for a cause outside them says; '' when it read them all."""
    if not stats["retry"]:
        return ""
    return (f"{stats['retry']} input(s) could not be read for a cause outside them, e.g. {stats['retry_detail']}; "
            "they are not marked done: run the job again to process them")  # fmt: skip
