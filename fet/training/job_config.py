"""Config of a distributed training run (``python -m ray_jobs.train STAGE --config F``).

One dataclass for every stage: the run's identity and storage, the optimizer, DeepSpeed, scaling,
checkpoints and MLflow. The stage's own settings (model preset, frozen inputs, ...) are the ``task``
section, validated by the stage's task (``fet.training.tasks``). YAML files: ``configs/train/ray/``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fet import storage
from fet.config import ConfigError

STAGES = ("stage1", "stage2", "audio", "stage3")
PROJECT = Path(__file__).resolve().parents[2]
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass
class JobOptim:
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 50
    schedule: str = "cosine"  # cosine | constant (after the linear warm-up)
    min_lr_ratio: float = 0.1  # cosine ends at lr · min_lr_ratio
    grad_clip: float = 1.0
    ema_decay: float = 0.995


@dataclass
class Scaling:
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 0.5  # leave CPU to Ray Data's read tasks on small machines
    gpus_per_worker: float = 1.0  # used when use_gpu


@dataclass
class Checkpointing:
    every: int = 50  # optimizer steps between checkpoints (and the last step always)
    keep: int = 2  # checkpoints kept in storage
    max_failures: int = 3  # worker-group restarts from the latest checkpoint before the run fails


@dataclass
class Tracking:
    tracking_uri: str = "sqlite:///outputs/mlflow.db"  # or http(s)://server; token from MLFLOW_TRACKING_TOKEN
    experiment: str = "faceedittalker"
    register: bool = True  # the exported component becomes a version in the Model Registry
    model_name: str | None = None  # registry name; default fet-<stage>
    log_every: int = 10
    sample_every: int = 0  # steps between sample images (0: only at the end)


@dataclass
class DataSection:
    shards: str = "data/shards/synthtalk"  # output folder of ray_jobs.preprocess (local or s3://)
    cache: bool = True  # keep this worker's share in memory after the first pass (small data sets)
    read_batch: int = 16  # shard rows per Ray Data batch
    shuffle_buffer: int = 256  # rows in the local shuffle buffer when streaming (cache: false)
    val_items: int = 8  # held-out rows used for samples and metrics


@dataclass
class TrainJobConfig:
    stage: str = "stage1"
    name: str = "stage1-tiny"  # run name: the same name resumes the same run
    storage_path: str = "outputs/ray_results"  # Ray Train checkpoints (local or s3://)
    out: str = "outputs/model"  # where the trained component (EMA weights) is exported
    task: dict[str, Any] = field(default_factory=dict)  # the stage's own section
    data: DataSection = field(default_factory=DataSection)
    steps: int = 200  # optimizer steps of the whole run
    batch_size: int = 8  # per worker
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 (GPU)
    deepspeed: str = "configs/train/deepspeed/zero2.json"
    optim: JobOptim = field(default_factory=JobOptim)
    scaling: Scaling = field(default_factory=Scaling)
    checkpoint: Checkpointing = field(default_factory=Checkpointing)
    mlflow: Tracking = field(default_factory=Tracking)

    def validate(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"stage={self.stage!r}: expected one of {list(STAGES)}")
        if not RUN_NAME.match(self.name):
            raise ConfigError(f"name={self.name!r}: expected letters, digits, '.', '_' or '-' (a run name)")
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"steps={self.steps}, batch_size={self.batch_size}: expected positive values")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision={self.precision!r}: expected fp32 or bf16")
        if self.precision == "bf16" and not self.scaling.use_gpu:
            raise ConfigError("precision=bf16 needs scaling.use_gpu=true (bf16 is several times slower on CPU)")
        if self.optim.schedule not in ("cosine", "constant"):
            raise ConfigError(f"optim.schedule={self.optim.schedule!r}: expected cosine or constant")
        if self.scaling.num_workers < 1 or self.checkpoint.every < 1 or self.checkpoint.keep < 1:
            raise ConfigError("scaling.num_workers, checkpoint.every and checkpoint.keep must be positive")
        self.deepspeed_file()  # raises when missing

    @property
    def model_name(self) -> str:
        return self.mlflow.model_name or f"fet-{self.stage}"

    def deepspeed_file(self) -> Path | str:
        """The DeepSpeed JSON: as given, else relative to the project (works under ``--working-dir``)."""
        if self.deepspeed.startswith("s3://"):
            return self.deepspeed
        for path in (Path(self.deepspeed), PROJECT / self.deepspeed):
            if path.is_file():
                return path
        raise ConfigError(f"deepspeed={self.deepspeed!r}: no such file (configs/train/deepspeed/*.json)")


def deepspeed_config(cfg: TrainJobConfig) -> dict[str, Any]:
    """The DeepSpeed config file with the values this run decides filled in ("auto" as in HF's
    integration): micro-batch, accumulation, clipping and precision follow ``cfg``."""
    src = cfg.deepspeed_file()
    data = storage.read_bytes(src) if isinstance(src, str) else src.read_bytes()
    try:
        ds = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{src}: not valid JSON ({e})") from e
    if not isinstance(ds, dict):
        raise ConfigError(f"{src}: expected a JSON object (a DeepSpeed config), got {type(ds).__name__}")
    if "optimizer" in ds or "scheduler" in ds:
        raise ConfigError(f"{src}: leave out 'optimizer' and 'scheduler'; they come from the optim section")
    ds["train_micro_batch_size_per_gpu"] = cfg.batch_size
    ds.setdefault("gradient_accumulation_steps", 1)
    ds["train_batch_size"] = cfg.batch_size * ds["gradient_accumulation_steps"] * cfg.scaling.num_workers
    ds["gradient_clipping"] = cfg.optim.grad_clip
    ds["bf16"] = {"enabled": cfg.precision == "bf16"}
    ds.setdefault("steps_per_print", 10**9)  # progress is ours
    ds.setdefault("wall_clock_breakdown", False)
    if not cfg.scaling.use_gpu:
        for key in ("offload_optimizer", "offload_param"):
            # offloading moves GPU memory to host memory: on a CPU run it only adds copies (and a C++ build)
            ds.get("zero_optimization", {}).pop(key, None)
    return ds
