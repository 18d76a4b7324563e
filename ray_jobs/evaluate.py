"""Ray evaluation job: generate every test clip with a bundle and measure it with the paper's metrics.

    python -m ray_jobs.evaluate --config configs/eval/synthtalk.yaml [key=value ...]
    ray job submit --working-dir . -- python -m ray_jobs.evaluate --config configs/eval/synthtalk.yaml

Ray Data reads the clip shards of one split → a pool of actors, each holding the pipeline and the metric
networks (``fet.evaluation.clip``), generates each clip from its first frame and its audio (and once
per edit) and measures it → the driver pools the records into Table 1 / Table 2
(``fet.evaluation.report``) and writes ``results.md``, ``table1.csv``, ``table2.csv``, ``per_clip.csv``,
``results.json`` and ``preview.png`` to ``out``, and logs them with every number to an MLflow run.

Each clip's record is kept under ``out/clips`` as it is measured (``fet.evaluation.records``): run again
with the same settings and bundle (after a stopped driver, a lost node), the job generates only the clips
it had not measured. A clip whose evaluation fails is left out of the tables with its reason, in the
notes of ``results.md``, and the others are measured; the job fails only when every clip does.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fet import storage
from fet.bundle import BundleError, check_bundle
from fet.config import ConfigError, from_dict, to_dict
from fet.data.shards import ShardError, check_split, one_listing
from fet.evaluation.clip import ClipEvaluator, check_edits, unavailable
from fet.evaluation.config import EvalConfig
from fet.evaluation.records import ClipRecords, decode, encode, record_settings
from fet.evaluation.report import build_report, per_clip_rows, report_json, to_csv
from fet.images import encode_png
from ray_jobs import tracking
from ray_jobs.common import QUIET_ENV, check_shipped_paths, fail, for_workers, init_ray, load_job_config, parse_args
from ray_jobs.run_logger import FINAL_WAIT, RunLogger
from ray_jobs.shard_reader import READ_CPUS, read_split

COLUMNS = ["clip_id", "speaker", "split", "fps", "frames", "audio", "landmarks", "transform", "blendshapes"]

OVERRIDES_EXAMPLE = "max_clips=8 ray.num_workers=4"  # shown in --help


class EvaluateClips:
    """A Ray Data actor: one clip-shard row → its evaluation record, encoded (``fet.evaluation.records``) and
    kept (``ClipRecords``); one that fails comes back with its ``error``, and the other clips go on."""

    def __init__(self, cfg: dict, settings: dict) -> None:
        import torch

        os.environ.update(QUIET_ENV)
        config = from_dict(EvalConfig, cfg)
        torch.set_num_threads(max(1, round(config.ray.cpus_per_worker)))
        self.records = ClipRecords(config.out, settings)
        try:
            self.evaluator, self.unready = ClipEvaluator(config), ""
        except Exception as e:  # each clip reports it in one line, not Ray's tracebacks of a dead actor
            self.evaluator, self.unready = None, f"the evaluation actor could not start: {type(e).__name__}: {e}"

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        """→ {clip_id, record (``fet.evaluation.records.encode``; empty when it failed), error}"""
        clip_id = row["clip_id"]
        if self.evaluator is None:
            return {"clip_id": clip_id, "record": b"", "error": self.unready}
        try:
            record = encode(self.evaluator(row))
        except Exception as e:  # this clip only: reported with its reason, tried again by the next run
            return {"clip_id": clip_id, "record": b"", "error": f"{type(e).__name__}: {e}"}
        self.records.put(clip_id, record)
        return {"clip_id": clip_id, "record": record, "error": ""}


def _clip_ids(cfg: EvalConfig) -> list[str]:
    """The clips a run measures, in order of clip id: every clip of ``cfg.split``, or its first
    ``cfg.max_clips``, the same ones in every run (only two columns of the shards are read)."""
    ids = sorted(r["clip_id"] for r in read_split(cfg.shards, "clips", ["clip_id", "split"], cfg.split).take_all())
    return ids[: cfg.max_clips] if cfg.max_clips > 0 else ids


def _records(cfg: EvalConfig, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Each clip's record, or {clip_id, error} for a clip that failed, in order of clip id. The records kept
    by an earlier run are read here; only the other clips go through Ray Data to the actors."""
    import ray
    from ray.data.expressions import col

    ids = _clip_ids(cfg)
    kept = ClipRecords(cfg.out, settings)
    rows = [{"clip_id": i, "record": r, "error": "", "reused": True} for i in ids if (r := kept.get(i)) is not None]
    if rows:
        print(f"records of {len(rows)} of the {len(ids)} clip(s) were measured by an earlier run with these "
              f"settings and bundle, and are used again ({kept.root})", flush=True)  # fmt: skip
    todo = sorted(set(ids) - {r["clip_id"] for r in rows})
    if todo:
        ds = read_split(cfg.shards, "clips", COLUMNS, cfg.split).filter(expr=col("clip_id").is_in(todo),
                                                                        num_cpus=READ_CPUS)  # fmt: skip
        ds = ds.map(
            EvaluateClips,
            fn_constructor_kwargs={"cfg": to_dict(cfg), "settings": settings},
            compute=ray.data.ActorPoolStrategy(size=min(cfg.ray.num_workers, len(todo))),
            num_cpus=cfg.ray.cpus_per_worker,
            num_gpus=cfg.ray.gpus_per_worker or None,
        )
        rows += [r | {"reused": False} for r in ds.take_all()]
    rows.sort(key=lambda r: r["clip_id"])
    return [{"clip_id": r["clip_id"], "error": r["error"]} if r["error"] else
            decode(r["record"]) | {"reused": r["reused"]} for r in rows]  # fmt: skip


def run(cfg: EvalConfig, info: dict[str, Any]) -> dict[str, Any]:
    """Evaluate, write the tables to ``cfg.out`` and log the MLflow run → summary. ``info``: the bundle's
    ``bundle.json``, as ``check_bundle`` returned it before Ray started."""
    t0 = time.perf_counter()
    skipped = unavailable(cfg.weights)
    for group, why in skipped.items():
        print(f"skipping {group}: {why}", flush=True)
    settings = record_settings(to_dict(cfg))
    ClipRecords(cfg.out, settings).prepare()  # records made with other settings go
    records = _records(cfg, settings)
    failed = {r["clip_id"]: r["error"] for r in records if r.get("error")}
    records = [r for r in records if not r.get("error")]
    if not records:
        clip, error = next(iter(failed.items()))
        raise ValueError(f"evaluation: every clip failed ({len(failed)}); the first, {clip}: {error}")
    report = build_report(records, skipped, cfg.edits)
    report.notes += [f"clip {c} failed and is not in the tables: {e}" for c, e in sorted(failed.items())]
    reused = sum(bool(r.get("reused")) for r in records)
    outputs = {
        "results.md": report.markdown(),
        "results.json": report_json(report),
        "table1.csv": to_csv(report.table1),
        "table2.csv": to_csv(report.table2),
        "per_clip.csv": to_csv(per_clip_rows(records)),
    }
    for name, text in outputs.items():
        storage.write_text(storage.join(cfg.out, name), text)
    previews = _preview(records[: cfg.previews])
    storage.write_bytes(storage.join(cfg.out, "preview.png"), previews)

    uri = tracking.local_tracking_uri(cfg.mlflow.tracking_uri, Path.cwd())
    name = cfg.mlflow.run_name or f"eval-{cfg.split}-{Path(cfg.bundle.rstrip('/')).name}"
    params = to_dict(cfg) | {"bundle_runs": info.get("runs", {})}
    run_id = tracking.new_run(uri, cfg.mlflow.experiment, name, params, {"fet.kind": "evaluation"})
    logger = RunLogger(uri, run_id)
    counts = {"clips": float(report.clips), "clips_failed": float(len(failed)), "clips_reused": float(reused)}
    logger.metrics(report.metrics() | counts, step=0, report=True)
    for k, why in report.skipped.items():
        logger.tag(f"skipped.{k}", why[:4000])
    logger.files({**{n: t.encode() for n, t in outputs.items()}, "preview.png": previews}, "evaluation")
    if logger.close(FINAL_WAIT) == 0:
        tracking.finish(uri, run_id, "FINISHED")
    summary = {"clips": report.clips, "failed": failed, "reused": reused, "out": cfg.out, "mlflow_run_id": run_id,
               "tracking_uri": tracking.redact(uri), "metrics": report.metrics(), "skipped": report.skipped,
               "seconds": time.perf_counter() - t0}  # fmt: skip
    return summary


def _preview(records: list[dict[str, Any]]) -> bytes:
    """The clips' preview strips stacked top to bottom."""
    strips = [np.asarray(Image.open(io.BytesIO(r["preview"])).convert("RGB")) for r in records]
    width = max(s.shape[1] for s in strips)
    strips = [np.pad(s, ((0, 4), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in strips]
    return encode_png(Image.fromarray(np.concatenate(strips)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args("ray_jobs.evaluate", __doc__.splitlines()[0], OVERRIDES_EXAMPLE, argv)
    cfg = load_job_config(EvalConfig, args)
    with one_listing():  # the check and the reads list the clip shards once
        return _main(args, cfg)


def _main(args: argparse.Namespace, cfg: EvalConfig) -> dict[str, Any]:
    try:  # before Ray starts and the clips are generated, not after
        weights = {f"weights.{k}": v or "" for k, v in to_dict(cfg.weights).items()}
        check_shipped_paths({"out": cfg.out, "mlflow.tracking_uri": cfg.mlflow.tracking_uri},
                            {"bundle": cfg.bundle, "shards": cfg.shards, **weights})  # fmt: skip
        cfg.bundle, cfg.shards, cfg.out = map(for_workers, (cfg.bundle, cfg.shards, cfg.out))
        for key in to_dict(cfg.weights):
            setattr(cfg.weights, key, for_workers(getattr(cfg.weights, key)))
        check_split(cfg.shards, "clips", cfg.split)  # no clip shards at all, or none in the split
        info = check_bundle(cfg.bundle)
        check_edits(cfg.bundle, cfg.edits)  # in the actors, an unknown edit ended the job in Ray's tracebacks
        tracking.check_reachable(cfg.mlflow.tracking_uri)
    except (ConfigError, ShardError, BundleError, ConnectionError, ValueError) as e:
        fail(e)
    init_ray(args.address)
    try:
        summary = run(cfg, info)
    except (BundleError, ShardError, ValueError) as e:
        fail(e)
    print(storage.read_text(storage.join(cfg.out, "results.md")))
    for clip, error in summary["failed"].items():
        print(f"warning: clip {clip} failed and is not in the tables: {error}", file=sys.stderr)
    print(f"evaluated {summary['clips']} clips ({summary['reused']} kept from an earlier run) in "
          f"{summary['seconds']:.1f} s → {cfg.out}; MLflow run {summary['mlflow_run_id']} at "
          f"{summary['tracking_uri']}")  # fmt: skip
    return summary


if __name__ == "__main__":
    main()
