"""Assemble the serving bundle from the components the training stages exported.

    python -m ray_jobs.export_bundle --out outputs/bundle \\
        --stage1 outputs/components/stage1 --stage2 outputs/components/stage2 \\
        --audio outputs/components/audio --stage3 outputs/components/stage3

Every path may be local or ``s3://``. Each stage directory's ``training_run.json`` (written by
``ray_jobs.train``) supplies the MLflow run id and held-out metrics recorded in ``bundle.json``.
"""

from __future__ import annotations

import argparse
import json

from fet import storage
from fet.bundle import BundleError, check_bundle, export_bundle
from fet.checkpoint import CheckpointError
from fet.config import ConfigError, apply_overrides, from_dict
from fet.pipeline import PipelineConfig
from ray_jobs.common import check_shipped_paths, fail

STAGES = ("stage1", "stage2", "audio", "stage3")


def training_runs(dirs: dict[str, str]) -> tuple[dict[str, str], dict[str, dict]]:
    """MLflow run ids and metrics by stage, from each directory's ``training_run.json`` when present."""
    runs, metrics = {}, {}
    for stage, d in dirs.items():
        path = storage.join(d, "training_run.json")
        if storage.exists(path):
            info = json.loads(storage.read_text(path))
            runs[stage] = info.get("mlflow_run_id", "")
            metrics[stage] = info.get("metrics", {})
    return runs, metrics


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ray_jobs.export_bundle", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", required=True, help="bundle directory to write (local or s3://)")
    for stage in STAGES:
        p.add_argument(f"--{stage}", required=True, help=f"component directory written by the {stage} run")
    p.add_argument("--face-landmarker", default=None,
                   help="face_landmarker.task, a path or s3:// URI (default: the packaged one)")  # fmt: skip
    p.add_argument("--pipeline", nargs="*", default=[], metavar="KEY=VALUE",
                   help="pipeline defaults stored in the bundle, e.g. steps=25 crop_scale=1.5")  # fmt: skip
    args = p.parse_args(argv)
    try:
        inputs = {f"--{s}": getattr(args, s) for s in STAGES} | {"--face-landmarker": args.face_landmarker or ""}
        check_shipped_paths({"--out": args.out}, inputs)
        pipeline = apply_overrides({}, args.pipeline)
        from_dict(PipelineConfig, pipeline, where="--pipeline")
    except (ConfigError, ValueError) as e:
        fail(e)
    dirs = {s: getattr(args, s) for s in STAGES}
    runs, metrics = training_runs(dirs)
    try:
        export_bundle(args.out, image_dir=dirs["stage1"], editing_dir=dirs["stage2"], audio_dir=dirs["audio"],
                      talker_dir=dirs["stage3"], face_landmarker=args.face_landmarker, runs=runs,
                      metrics=metrics, pipeline=pipeline)  # fmt: skip
        info = check_bundle(args.out)
    except (BundleError, CheckpointError, FileNotFoundError) as e:
        fail(e)
    print(json.dumps({"bundle": args.out, "runs": runs, "components": sorted(info.get("components", {}))}, indent=2))


if __name__ == "__main__":
    main()
