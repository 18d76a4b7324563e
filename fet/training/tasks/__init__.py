"""The training stages as tasks of the distributed trainer (``ray_jobs.train``)."""

from __future__ import annotations

from fet.training.job_config import TrainJobConfig
from fet.training.tasks.base import Report, StageModel, TrainingTask


def build_task(job: TrainJobConfig) -> TrainingTask:
    """The task of ``job.stage`` with its ``task`` section validated (frozen inputs loaded)."""
    return task_class(job.stage)(job)


def task_class(stage: str) -> type[TrainingTask]:
    """Imported on demand: a stage's task pulls in only its own models."""
    if stage == "stage1":
        from fet.training.tasks.stage1 import Stage1Task

        return Stage1Task
    if stage == "stage2":
        from fet.training.tasks.stage2 import Stage2Task

        return Stage2Task
    if stage == "audio":
        from fet.training.tasks.audio import AudioTask

        return AudioTask
    if stage == "stage3":
        from fet.training.tasks.stage3 import Stage3Task

        return Stage3Task
    raise ValueError(f"stage={stage!r}: expected stage1, stage2, audio or stage3")


__all__ = ["Report", "StageModel", "TrainingTask", "build_task", "task_class"]
