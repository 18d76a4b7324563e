"""Ray evaluation job: generate every test clip with a bundle and measure it with the paper's metrics.

    python -m ray_jobs.evaluate --config configs/eval/synthtalk.yaml [key=value ...]
    ray job submit --working-dir . -- python -m ray_jobs.evaluate --config configs/eval/synthtalk.yaml

Ray Data reads the clip shards of one split → a pool of actors, each holding the pipeline and the metric
networks (``fet.evaluation.clip``), generates each clip from its first frame and its audio (and once
per edit) and measures it → the driver pools the records into Table 1 / Table 2
(``fet.evaluation.report``) and writes ``results.md``, ``table1.csv``, ``table2.csv``, ``per_clip.csv``,
``results.json`` and ``preview.png`` to ``out``, and logs them with every number to an MLflow run.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fet import storage
from fet.bundle import BundleError, check_bundle
from fet.config import ConfigError, from_dict, to_dict
from fet.data.shards import ShardError, check_split, pack, unpack
from fet.evaluation.clip import ClipEvaluator, unavailable
from fet.evaluation.config import EvalConfig
from fet.evaluation.report import build_report, per_clip_rows, report_json, to_csv
from fet.images import encode_png
from ray_jobs import tracking
from ray_jobs.common import QUIET_ENV, check_shipped_paths, fail, for_workers, init_ray, load_job_config, parse_args
from ray_jobs.run_logger import FINAL_WAIT, RunLogger
from ray_jobs.shard_reader import read_split

COLUMNS = ["clip_id", "speaker", "split", "fps", "frames", "audio", "landmarks", "transform", "blendshapes"]
ARRAY_FIELDS = ("real_features", "gen_features")

OVERRIDES_EXAMPLE = "max_clips=8 ray.num_workers=4"  # shown in --help


class EvaluateClips:
    """A Ray Data actor: one clip-shard row → its evaluation record (arrays packed as .npy bytes)."""

    def __init__(self, cfg: dict) -> None:
        import torch

        os.environ.update(QUIET_ENV)
        config = from_dict(EvalConfig, cfg)
        torch.set_num_threads(max(1, round(config.ray.cpus_per_worker)))
        self.evaluator = ClipEvaluator(config)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        rec = self.evaluator(row)
        return {k: pack(v) if k in ARRAY_FIELDS else v for k, v in rec.items()}


def _records(cfg: EvalConfig) -> list[dict[str, Any]]:
    import ray

    ds = read_split(cfg.shards, "clips", COLUMNS, cfg.split)
    if cfg.max_clips > 0:
        ds = ds.limit(cfg.max_clips)
    ds = ds.map(
        EvaluateClips,
        fn_constructor_kwargs={"cfg": to_dict(cfg)},
        compute=ray.data.ActorPoolStrategy(size=cfg.ray.num_workers),
        num_cpus=cfg.ray.cpus_per_worker,
        num_gpus=cfg.ray.gpus_per_worker or None,
    )
    records = ds.take_all()
    for r in records:
        for k in ARRAY_FIELDS:
            if k in r:
                r[k] = unpack(r[k])
    return sorted(records, key=lambda r: r["clip_id"])


def run(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate, write the tables to ``cfg.out`` and log the MLflow run → summary."""
    t0 = time.perf_counter()
    info = check_bundle(cfg.bundle)
    skipped = unavailable(cfg.weights)
    for group, why in skipped.items():
        print(f"skipping {group}: {why}", flush=True)
    records = _records(cfg)
    report = build_report(records, skipped, cfg.edits)
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
    logger.metrics(report.metrics() | {"clips": float(report.clips)}, step=0, report=True)
    for k, why in report.skipped.items():
        logger.tag(f"skipped.{k}", why[:4000])
    logger.files({**{n: t.encode() for n, t in outputs.items()}, "preview.png": previews}, "evaluation")
    if logger.close(FINAL_WAIT) == 0:
        tracking.finish(uri, run_id, "FINISHED")
    summary = {"clips": report.clips, "out": cfg.out, "mlflow_run_id": run_id, "tracking_uri": uri,
               "metrics": report.metrics(), "skipped": report.skipped, "seconds": time.perf_counter() - t0}  # fmt: skip
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
    try:  # before Ray starts and the clips are generated, not after
        weights = {f"weights.{k}": v or "" for k, v in to_dict(cfg.weights).items()}
        check_shipped_paths({"out": cfg.out, "mlflow.tracking_uri": cfg.mlflow.tracking_uri},
                            {"bundle": cfg.bundle, "shards": cfg.shards, **weights})  # fmt: skip
        cfg.bundle, cfg.shards, cfg.out = map(for_workers, (cfg.bundle, cfg.shards, cfg.out))
        for key in to_dict(cfg.weights):
            setattr(cfg.weights, key, for_workers(getattr(cfg.weights, key)))
        check_split(cfg.shards, "clips", cfg.split)  # no clip shards at all, or none in the split
        check_bundle(cfg.bundle)
        tracking.check_reachable(cfg.mlflow.tracking_uri)
    except (ConfigError, ShardError, BundleError, ConnectionError) as e:
        fail(e)
    init_ray(args.address)
    try:
        summary = run(cfg)
    except (BundleError, ShardError, ValueError) as e:
        fail(e)
    print(storage.read_text(storage.join(cfg.out, "results.md")))
    print(f"evaluated {summary['clips']} clips in {summary['seconds']:.1f} s → {cfg.out}; MLflow run "
          f"{summary['mlflow_run_id']} at {summary['tracking_uri']}")  # fmt: skip
    return summary


if __name__ == "__main__":
    main()
