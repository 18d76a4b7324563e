"""Stage 2 as a distributed task: linear attribute classifiers on frozen z_sem (paper Eq. 8).

Each rank encodes its share of the labelled faces once with the frozen stage-1 encoder; the
normalisation statistics and the set of trainable attributes are summed over all ranks, so every
rank builds the same classifier whatever share it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from fet.autoencoder import DiffusionAutoencoder
from fet.data.shards import ShardError, read_rows
from fet.editing.attributes import CELEBA_ATTRIBUTES, AttributeLibrary
from fet.editing.classifier import AttributeClassifier
from fet.editing.edit import edit_semantic
from fet.editor import save_attribute_model
from fet.images import encode_png, image_grid
from fet.lineage import encoder_digest, write_lineage
from fet.training.losses import attribute_bce_loss
from fet.training.stage2 import classifier_aurocs
from fet.training.tasks.base import Report, StageModel, TrainingTask, all_reduce
from fet.training.tasks.frames import decode_square, to_model_range

_UNLABELLED = (
    "{shards}: no attribute has both present (1) and absent (0) labels in the training faces; stage 2 "
    "needs image shards with attributes (CelebA-HQ annotation file or SynthTalk)"
)


@dataclass
class Stage2Section:
    autoencoder: str = "outputs/model"  # stage-1 component directory (frozen E_sem)
    default_alpha: float = 0.3
    max_abs_alpha: float = 1.0
    edit_direction: str = "classifier"  # or "label_model" (fet.editing.label_model), fitted here either way
    label_model_ridge: float = 10.0
    encode_batch: int = 64
    eval_steps: int = 20  # DDIM steps of the edit preview
    preview: list[str] | None = None  # attributes shown in the edit preview (default: the best three)


class Stage2Model(StageModel):
    def __init__(self, z_dim: int) -> None:
        super().__init__()
        self.classifier = AttributeClassifier(z_dim, label_model=True)

    @property
    def exported(self) -> AttributeClassifier:
        return self.classifier

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator):
        labels = batch["labels"].clone()
        labels[:, ~self.classifier.trained] = -1
        if not (labels >= 0).any():  # nothing labelled in this batch: a zero loss keeps ranks in step
            return self.classifier.linear.weight.sum() * 0.0, {}
        return attribute_bce_loss(self.classifier(batch["z"]), labels), {}


class Stage2Task(TrainingTask[Stage2Section]):
    stage = "stage2"
    kind = "images"
    columns: ClassVar[list[str]] = ["image_id", "split", "image", "attributes"]
    section = Stage2Section

    def __init__(self, job) -> None:
        super().__init__(job)
        self._library()  # a bad α range or edit direction fails here, not after training
        self.autoencoder = DiffusionAutoencoder.load(self.cfg.autoencoder).requires_grad_(False)
        self.lineage = encoder_digest(self.cfg.autoencoder)  # what the export records it was trained on

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> None:
        self.autoencoder.to(device)  # fp32 whatever the precision: it encodes each face once, not per step

    def build(self) -> Stage2Model:
        return Stage2Model(self.autoencoder.cfg.z_dim)

    @torch.no_grad()
    def _encode(self, rows: list[dict[str, Any]]) -> torch.Tensor:
        size, out = self.autoencoder.cfg.image_size, []
        for i in range(0, len(rows), self.cfg.encode_batch):
            chunk = np.stack([decode_square(r["image"], size) for r in rows[i : i + self.cfg.encode_batch]])
            out.append(self.autoencoder.encode(to_model_range(chunk)))
        return torch.cat(out).float().cpu() if out else torch.zeros(0, self.autoencoder.cfg.z_dim)

    def kept_bytes(self, rows: list[dict[str, Any]]) -> int:
        return len(rows) * (self.autoencoder.cfg.z_dim * 4 + len(CELEBA_ATTRIBUTES) * 8)  # fp32 code, int64 labels

    def check_rows(self, shards: str) -> None:
        """Labelled faces read shard by shard, up to the first attribute seen both present and absent."""
        present = absent = np.zeros(len(CELEBA_ATTRIBUTES), bool)
        for row in read_rows(shards, "images", "train", ["split", "attributes"]):
            y = np.asarray(row["attributes"])
            present, absent = present | (y == 1), absent | (y == 0)
            if (present & absent).any():
                return
        raise ShardError(_UNLABELLED.format(shards=shards))

    def examples(self, rows: list[dict[str, Any]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        z = self._encode(rows)
        return [(z[i], torch.as_tensor(np.asarray(r["attributes"], np.int64))) for i, r in enumerate(rows)]

    def collate(self, examples, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return {"z": torch.stack([e[0] for e in examples]), "labels": torch.stack([e[1] for e in examples])}

    @torch.no_grad()
    def prepare(self, model: Stage2Model, examples) -> None:
        """Normalisation statistics and trainable attributes from every rank's examples."""
        z = torch.stack([e[0] for e in examples]).double()
        y = torch.stack([e[1] for e in examples])
        sums = all_reduce(torch.stack([torch.full_like(z[0], len(z)), z.sum(0), (z * z).sum(0)]))
        n, s, ss = sums
        if n[0] < 2:
            raise ValueError(f"{self.job.data.shards}: fewer than 2 training faces; stage 2 needs labelled faces")
        mean = s / n
        std = ((ss - n * mean * mean) / (n - 1)).clamp_min(1e-12).sqrt()
        counts = all_reduce(torch.stack([(y == 1).sum(0), (y == 0).sum(0)]))
        clf = model.classifier
        clf.z_mean.copy_(mean.float())
        clf.z_std.copy_(std.float().clamp_min(1e-6))
        clf.trained.copy_((counts[0] > 0) & (counts[1] > 0))
        if not clf.trained.any():
            raise ValueError(_UNLABELLED.format(shards=self.job.data.shards))
        # the label model from every rank's sums, so each rank solves the same system
        labels = torch.where(clf.trained.to(y.device), y, 0)
        phi_phi, phi_z = clf.label_model.statistics(clf.normalize(z.to(clf.z_mean.device)).cpu(), labels)
        clf.label_model.solve(all_reduce(phi_phi), all_reduce(phi_z), self.cfg.label_model_ridge)

    @torch.no_grad()
    def report(self, model: AttributeClassifier, rows: list[dict[str, Any]]) -> Report:
        z = self._encode(rows)
        labels = torch.as_tensor(np.stack([np.asarray(r["attributes"], np.int64) for r in rows]))
        aucs = classifier_aurocs(model.eval(), z, labels)
        metrics = {f"val_auroc/{k}": v for k, v in aucs.items()}
        metrics["val_auroc_mean"] = float(np.mean(list(aucs.values()))) if aucs else float("nan")
        shown = self.cfg.preview or sorted(aucs, key=lambda k: -aucs[k])[:3]
        return Report(metrics, {"edits.png": self._edit_preview(model, rows[:4], shown)})

    @torch.no_grad()
    def _edit_preview(self, clf: AttributeClassifier, rows: list[dict[str, Any]], attributes: list[str]) -> bytes:
        """Rows: held-out faces; columns: reconstruction, then +α along each attribute."""
        ae, steps = self.autoencoder, self.cfg.eval_steps
        images = to_model_range(np.stack([decode_square(r["image"], ae.cfg.image_size) for r in rows]))
        z = ae.encode(images)
        x_T = ae.encode_stochastic(images, z, steps)
        library = self._library()
        cols = [ae.render(x_T, z, steps)]
        for name in attributes:
            if name in CELEBA_ATTRIBUTES and name in clf.trained_attributes:
                cols.append(ae.render(x_T, edit_semantic(z, clf, {name: library.max_abs_alpha}, library), steps))
        grid = torch.stack(cols, dim=1).flatten(0, 1)  # row-major: one face per row
        return encode_png(image_grid(grid, rows=len(rows)))

    def _library(self) -> AttributeLibrary:
        return AttributeLibrary(self.cfg.default_alpha, self.cfg.max_abs_alpha, self.cfg.edit_direction)

    def export(self, model: AttributeClassifier, out: str) -> None:
        save_attribute_model(out, model, self._library())
        write_lineage(out, self.cfg.autoencoder, self.lineage)
