"""Stage 1 as a distributed task: E_sem + denoiser with L_simple on image shards (paper Eq. 7)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from fet.autoencoder import DiffusionAutoencoder
from fet.diffusion.ddim import training_scheduler
from fet.diffusion.timesteps import TimestepSampling
from fet.images import encode_png, image_grid
from fet.training.config import resolve_model
from fet.training.stage1 import reconstruction_report, stage1_loss
from fet.training.tasks.base import Report, StageModel, TrainingTask
from fet.training.tasks.frames import decode_square, to_model_range


@dataclass
class Stage1Section:
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny", "image_size": 32})
    eval_steps: int = 20  # DDIM steps of the held-out reconstructions
    timesteps: TimestepSampling = "uniform"  # how L_simple draws t (fet.diffusion.timesteps)


class Stage1Model(StageModel):
    def __init__(self, autoencoder: DiffusionAutoencoder, timesteps: TimestepSampling = "uniform") -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.timesteps = timesteps
        self.autoencoder.codec.requires_grad_(False)
        self.noise = training_scheduler(autoencoder.cfg)

    @property
    def exported(self) -> DiffusionAutoencoder:
        return self.autoencoder

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator):
        loss = stage1_loss(self.autoencoder, batch["images"], self.noise, generator, self.timesteps)
        return loss, {}


class Stage1Task(TrainingTask[Stage1Section]):
    stage = "stage1"
    kind = "images"
    columns: ClassVar[list[str]] = ["image_id", "split", "image"]
    section = Stage1Section

    def __init__(self, job) -> None:
        super().__init__(job)
        self.model_cfg = resolve_model(self.cfg.model, where="task.model")

    def build(self) -> Stage1Model:
        return Stage1Model(DiffusionAutoencoder(self.model_cfg).train(), self.cfg.timesteps)

    def kept_bytes(self, rows: list[dict[str, Any]]) -> int:
        return len(rows) * self.model_cfg.image_size**2 * 3  # a decoded uint8 face each

    def examples(self, rows: list[dict[str, Any]]) -> list[np.ndarray]:
        return [decode_square(r["image"], self.model_cfg.image_size) for r in rows]

    def collate(self, examples: list[np.ndarray], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return {"images": to_model_range(np.stack(examples))}

    @torch.no_grad()
    def report(self, model: DiffusionAutoencoder, rows: list[dict[str, Any]]) -> Report:
        images = to_model_range(np.stack(self.examples(rows)))
        value, rec = reconstruction_report(model.eval(), images, self.cfg.eval_steps)
        grid = encode_png(image_grid(torch.cat([images, rec]), rows=2))
        return Report({"val_reconstruction_psnr_db": value}, {"reconstructions.png": grid})

    def export(self, model: DiffusionAutoencoder, out: str) -> None:
        model.save(out)
