"""Config of an evaluation run (``python -m ray_jobs.evaluate --config F``); YAML in ``configs/eval/``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MetricWeights:
    """Where the metric networks come from (local paths or ``s3://``). A network whose file is absent is
    skipped, with the reason."""

    dlib_models_dir: str | None = None  # default: the installed face_recognition_models package
    fid_weights: str | None = None  # pt_inception-2015-12-05-6726825d.pth (pytorch-fid's port of the TF weights)
    syncnet_weights: str | None = None  # syncnet_v2.model (joonson/syncnet_python)


@dataclass
class EvalWorkers:
    num_workers: int = 1  # evaluation actors, each with its own pipeline and metric networks
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


@dataclass
class EvalTracking:
    tracking_uri: str = "sqlite:///outputs/mlflow.db"
    experiment: str = "faceedittalker-eval"
    run_name: str | None = None  # default: eval-<split>-<bundle folder name>


@dataclass
class EvalConfig:
    shards: str = "data/shards/synthtalk"  # clip shards written by ray_jobs.preprocess
    bundle: str = "outputs/bundle"
    out: str = "outputs/eval"  # tables, per-clip CSV and previews (local or s3://)
    split: str = "test"
    max_clips: int = 0  # 0: every clip of the split; n: its first n clips by clip id, the same in every run
    max_seconds: float = 0.0  # evaluate only the first seconds of each clip (0: whole clips)
    steps: int | None = None  # DDIM steps; default: the bundle's pipeline setting
    seed: int = 0
    edits: list[str] = field(default_factory=lambda: ["add glasses", "blond hair"])  # Table 2 generations
    eval_size: int = 256  # frames are compared at this size by dlib, CPBD and SyncNet (upscaled when smaller)
    fid_every: int = 5  # Inception features of every n-th frame
    previews: int = 4  # clips drawn in preview.png
    device: str = "cpu"  # cuda on GPU workers
    weights: MetricWeights = field(default_factory=MetricWeights)
    ray: EvalWorkers = field(default_factory=EvalWorkers)
    mlflow: EvalTracking = field(default_factory=EvalTracking)
