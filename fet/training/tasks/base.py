"""What a training stage gives the distributed trainer: its data, its model, its loss, its report.

The loop in ``ray_jobs.train_loop`` is the same for every stage; a ``TrainingTask`` says what is
stage-specific. Rows come from the preprocessing shards (``fet.data.shards``); a row becomes one or
more *examples* (decoded once), and ``collate`` turns a list of examples into a batch. ``build``
returns a ``StageModel``: an ``nn.Module`` whose ``forward(batch, generator)`` returns the loss and
its parts, and whose ``exported`` sub-module is what EMA tracks and the stage exports.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from fet.config import from_dict
from fet.training.job_config import TrainJobConfig

S = TypeVar("S")


class StageModel(nn.Module):
    """A stage's trainable module: ``forward(batch, generator) → (loss, {name: float})``."""

    @property
    def exported(self) -> nn.Module:
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups at base learning rate ``lr`` (the schedule scales every group)."""
        return [{"params": self.trainable_parameters(), "lr": lr}]


@dataclass
class Report:
    """What a stage reports on held-out data: scalar metrics and pictures (PNG bytes by file name)."""

    metrics: dict[str, float]
    images: dict[str, bytes]


class TrainingTask(ABC, Generic[S]):
    stage: ClassVar[str]
    kind: ClassVar[str]  # shard kind read: "images" or "clips"
    columns: ClassVar[list[str]]  # shard columns read
    kept_columns: ClassVar[list[str]] = ["split"]  # the shard columns ``kept_bytes`` reads
    section: ClassVar[type]  # dataclass of the ``task`` config section

    def __init__(self, job: TrainJobConfig) -> None:
        self.job = job
        self.cfg: S = from_dict(self.section, job.task, where="task")

    @abstractmethod
    def build(self) -> StageModel:
        """The model to train, initialised identically on every rank (the caller seeds torch)."""

    @abstractmethod
    def examples(self, rows: list[dict[str, Any]]) -> list[Any]:
        """Shard rows → training examples (a fixed number per row, so ranks stay in step)."""

    @property
    def examples_per_row(self) -> int:
        """How many examples ``examples`` makes of one row."""
        return 1

    def kept_bytes(self, rows: list[dict[str, Any]]) -> int:
        """The memory the examples of these training rows (read with ``kept_columns``) take when a worker
        keeps them (``data.cache``), computed from their sizes without decoding them (0: not known)."""
        return 0

    def train_columns(self, shards: str) -> list[str]:
        """The shard columns the training rows under ``shards`` are read with (``columns``, unless the task
        finds, reading a small column in the driver, that it can do without some)."""
        return self.columns

    def check_rows(self, shards: str) -> None:
        """Raise ``ShardError`` when the training rows under ``shards`` cannot train this stage, found by
        reading only a few columns in the driver, before the workers start (nothing to check by default)."""

    @abstractmethod
    def collate(self, examples: list[Any], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Examples → a batch (random choices, e.g. frame pairs, come from ``rng``)."""

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> None:
        """Move the task's frozen modules (e.g. the stage-1 encoder) to the training device; ``dtype`` is the
        training precision (bf16 on GPUs), which DeepSpeed gives the trained model but not these."""

    def prepare(self, model: StageModel, examples: list[Any]) -> None:
        """Called once with this rank's examples before training (e.g. statistics over the data), in a task
        that overrides it (``prepares``)."""

    @property
    def prepares(self) -> bool:
        """Whether ``prepare`` looks at the examples (the task overrides it). Streaming from the shards, only
        such a task is given a pass over this rank's data before its first step."""
        return type(self).prepare is not TrainingTask.prepare

    @abstractmethod
    def report(self, model: nn.Module, rows: list[dict[str, Any]]) -> Report:
        """Metrics and pictures of the (EMA) ``exported`` module on held-out rows."""

    @abstractmethod
    def export(self, model: nn.Module, out: str) -> None:
        """Write the (EMA) ``exported`` module as the component directory the bundle takes."""


def all_reduce(t: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
    """``op`` over data-parallel ranks (unchanged in a single process), returned on the device of ``t``.
    NCCL reduces CUDA tensors only, so under it a CPU tensor goes through this rank's GPU and back."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    via = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else t.device
    moved = t.to(via)
    dist.all_reduce(moved, op=op)
    return moved.to(t.device)
