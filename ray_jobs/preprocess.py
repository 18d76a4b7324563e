"""Ray Data preprocessing: shard clips and images, with landmarks and audio features precomputed.

    python -m ray_jobs.preprocess --config configs/data/synthtalk.yaml [key=value ...]
    ray job submit --working-dir . -- python -m ray_jobs.preprocess --config configs/data/hdtf.yaml

Per source: list the inputs (driver) → drop those already complete in ``out`` → Ray Data
``flat_map`` over a pool of actors, each holding one MediaPipe FaceLandmarker and one audio encoder
(``fet.data.preprocess``) → optionally audio features in their own (GPU) actors → shard writers
(``fet.data.shards``: atomic Parquet + sidecar) → manifest, rejects table and previews.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from fet.audio.features import AudioEncoder
from fet.config import ConfigError, from_dict, to_dict
from fet.data import shards
from fet.data.preprocess import (
    PreprocessConfig,
    add_audio_features,
    add_summary,
    check_models,
    make_processor,
    pending,
    retry_message,
    shard_kind,
)
from fet.data.preprocess.settings import check_settings
from fet.data.shard_preview import write_previews
from fet.data.sources import SourceError, item_from_dict, item_to_dict
from fet.storage import StorageError
from ray_jobs.common import QUIET_ENV, check_shipped_paths, fail, for_workers, init_ray, load_job_config, parse_args
from ray_jobs.shard_writer import write_batch

OVERRIDES_EXAMPLE = "out=s3://bucket/shards ray.num_workers=8"  # shown in --help


class ProcessInputs:
    """A Ray Data actor: one input row ``{item, skip}`` → its shard rows (accepted and rejected)."""

    def __init__(self, cfg: dict, kind: str, audio_features: bool) -> None:
        import cv2
        import torch

        os.environ.update(QUIET_ENV)
        config = from_dict(PreprocessConfig, cfg)
        threads = max(1, round(config.ray.cpus_per_worker))  # no oversubscription: one pool per CPU share
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        self.processor = make_processor(config, kind, audio_features)

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        return self.processor(item_from_dict(row["item"]), set(row["skip"]))


class AddAudioFeatures:
    """A Ray Data actor computing audio features (wav2vec2 on a GPU when the actor has one)."""

    def __init__(self, cfg: dict) -> None:
        import torch

        self.encoder = AudioEncoder(from_dict(PreprocessConfig, cfg).audio_encoder).eval()
        if torch.cuda.is_available():
            self.encoder.to("cuda")

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return add_audio_features(row, self.encoder)


def run(cfg: PreprocessConfig, work: list | None = None) -> dict[str, Any]:
    """Preprocess every pending input of every source → counts. ``work`` is what ``pending`` returned, with
    ``check_settings`` passed, as ``main`` does before Ray starts; without it both are done here.
    With ``ray.preserve_order`` (the default)
    rows reach the shard writers in input order (Ray Data's ``preserve_order``), so the same inputs are cut
    into the same shards on every run whichever actor finishes first, and training, which reads the shards
    part by part, sees its rows in the same order."""
    import ray.data

    if work is None:
        work = pending(cfg)
        check_settings(cfg)
    options = ray.data.DataContext.get_current().execution_options
    preserve, options.preserve_order = options.preserve_order, cfg.ray.preserve_order
    try:
        return _run(cfg, work)
    finally:
        options.preserve_order = preserve


def _run(cfg: PreprocessConfig, work: list) -> dict[str, Any]:
    import ray

    r = cfg.ray
    stats: dict[str, Any] = {"processed": 0, "skipped": 0, "rows": 0, "rejects": 0, "retry": 0, "retry_detail": "",
                             "write_seconds": 0.0}  # fmt: skip
    t0 = time.perf_counter()
    cfg_dict = to_dict(cfg)
    for source, todo, total in work:
        kind = shard_kind(source)
        stats["skipped"] += total - len(todo)
        print(f"{source.kind}: {total} inputs, {len(todo)} to process, {total - len(todo)} already done", flush=True)
        if not todo:
            continue
        separate_audio = kind == "clips" and r.audio_workers > 0
        # one input per block, so inputs spread over every actor (from_items needs no read tasks, which
        # matters on small machines: the actor pool holds nearly every CPU)
        items = [{"item": item_to_dict(item), "skip": sorted(skip)} for item, skip in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.flat_map(
            ProcessInputs,
            fn_constructor_kwargs={"cfg": cfg_dict, "kind": kind, "audio_features": not separate_audio},
            compute=ray.data.ActorPoolStrategy(size=min(r.num_workers, len(todo))),
            num_cpus=r.cpus_per_worker,
            num_gpus=r.gpus_per_worker or None,
        )
        if separate_audio:
            ds = ds.map(
                AddAudioFeatures,
                fn_constructor_kwargs={"cfg": cfg_dict},
                compute=ray.data.ActorPoolStrategy(size=r.audio_workers),
                num_cpus=0.5,
                num_gpus=r.gpus_per_audio_worker or None,
            )
        ds = ds.map_batches(write_batch, batch_size=cfg.rows_per_shard, batch_format="pyarrow",
                            fn_kwargs={"out": cfg.out, "kind": kind}, num_cpus=0.1)  # fmt: skip
        for s in ds.take_all():
            add_summary(stats, s)
            stats["write_seconds"] += s["write_seconds"]
        stats["processed"] += len(todo)
    stats["manifest"] = shards.write_manifest(cfg.out)
    write_previews(cfg.out)
    stats["wall_seconds"] = time.perf_counter() - t0
    return stats


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args("ray_jobs.preprocess", __doc__.splitlines()[0], OVERRIDES_EXAMPLE, argv)
    cfg = load_job_config(PreprocessConfig, args)
    try:  # each before Ray starts
        inputs = {f"sources.{i}.{k}": getattr(src, k) or "" for i, src in enumerate(cfg.sources)
                  for k in ("root", "audio_root", "attributes")}  # fmt: skip
        models = {"face_landmarker": cfg.face_landmarker or "", "audio.path": cfg.audio.get("path") or ""}
        check_shipped_paths({"out": cfg.out}, inputs | models)
        check_models(cfg)  # not found by every worker, each with a traceback
        cfg.out = for_workers(cfg.out)
        for src in cfg.sources:  # the inputs' paths the workers read come from their source's root
            src.root, src.audio_root, src.attributes = map(for_workers, (src.root, src.audio_root, src.attributes))
        work = pending(cfg)  # every source listed: a data folder that is missing or has the wrong layout
        check_settings(cfg)  # a folder made with other settings is refused at once (model paths as given)
        cfg.face_landmarker = for_workers(cfg.face_landmarker)
        cfg.audio = {**cfg.audio, "path": for_workers(cfg.audio["path"])} if cfg.audio.get("path") else cfg.audio
    except (ConfigError, SourceError, StorageError) as e:
        fail(e)
    init_ray(args.address)
    try:
        stats = run(cfg, work)
    except (SourceError, StorageError) as e:
        fail(e)
    m = stats["manifest"]
    for kind in shards.KINDS:
        if kind in m:
            k = m[kind]
            print(f"{kind}: {k['rows']} rows in {len(k['shards'])} shards ({k['splits']}), {k['rejects']} rejected "
                  f"{k['reject_reasons']}")  # fmt: skip
    print(f"processed {stats['processed']} inputs, skipped {stats['skipped']} already done, "
          f"{stats['wall_seconds']:.1f} s; manifest: {shards.manifest_uri(cfg.out)}")  # fmt: skip
    if message := retry_message(stats):  # the rest is published; the job is not complete
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(1)
    return stats


if __name__ == "__main__":
    main()
