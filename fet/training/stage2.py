"""Stage 2 (paper Algorithm 2): linear attribute classifiers on frozen z_sem with BCE (Eq. 8)."""

from __future__ import annotations

import json

import numpy as np
import torch
from tqdm import tqdm

from fet import storage
from fet.autoencoder import DiffusionAutoencoder
from fet.data.image_folder import FaceImageDataset
from fet.editing.attributes import CELEBA_ATTRIBUTES, AttributeLibrary
from fet.editing.classifier import AttributeClassifier
from fet.editor import save_attribute_model
from fet.lineage import encoder_digest, write_lineage
from fet.metrics.classification import auroc
from fet.training.config import Stage2Config
from fet.training.losses import attribute_bce_loss


@torch.no_grad()
def encode_dataset(
    model: DiffusionAutoencoder, dataset, batch_size: int = 64, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """All images → (z_sem (N, d), labels (N, 40))."""
    zs, ys = [], []
    for i in tqdm(range(0, len(dataset), batch_size), desc="encode z_sem", disable=not progress, leave=False):
        items = [dataset[j] for j in range(i, min(i + batch_size, len(dataset)))]
        zs.append(model.encode(torch.stack([it[0] for it in items])))
        ys.append(torch.stack([it[1] for it in items]))
    return torch.cat(zs), torch.cat(ys)


def fit_classifier(
    z: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    progress: bool = True,
    ridge: float = 10.0,
) -> AttributeClassifier:
    """Fit normalisation stats, one logistic regression per attribute that has both classes labelled, and
    the attribute label model (ridge ``ridge``) on the same faces."""
    clf = AttributeClassifier(z.shape[1], label_model=True)
    clf.fit_normalizer(z)
    has_both = (labels == 1).any(0) & (labels == 0).any(0)
    if not has_both.any():
        raise ValueError("labels: no attribute has both present (1) and absent (0) examples; nothing to train")
    clf.trained.copy_(has_both)
    clf.label_model.fit(clf.normalize(z), torch.where(has_both, labels, 0), ridge)
    opt = torch.optim.AdamW(clf.linear.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    masked = labels.clone()
    masked[:, ~has_both] = -1
    for _ in tqdm(range(epochs), desc="stage 2", disable=not progress, leave=False):
        for idx in torch.randperm(len(z), generator=g).split(batch_size):
            if not (masked[idx] >= 0).any():
                continue
            loss = attribute_bce_loss(clf(z[idx]), masked[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return clf.eval()


def classifier_aurocs(clf: AttributeClassifier, z: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Per trained attribute, AUROC on (z, labels) where labels are known and both classes occur."""
    with torch.no_grad():
        scores = clf(z).float().cpu().numpy()
    out = {}
    for i, name in enumerate(CELEBA_ATTRIBUTES):
        known = labels[:, i].numpy() >= 0
        if clf.trained[i] and known.any():
            value = auroc(scores[known, i], labels[known, i].numpy() == 1)
            if not np.isnan(value):
                out[name] = value
    return out


def train_stage2(cfg: Stage2Config, progress: bool = True) -> dict:
    library = AttributeLibrary(cfg.default_alpha, cfg.max_abs_alpha, cfg.edit_direction)  # checked before any work
    model = DiffusionAutoencoder.load(cfg.autoencoder)
    lineage = encoder_digest(cfg.autoencoder)
    size = model.cfg.image_size
    train = FaceImageDataset(cfg.data.images, size, cfg.data.attributes, "train", cfg.data.val_fraction, cfg.data.limit)
    val = FaceImageDataset(cfg.data.images, size, cfg.data.attributes, "val", cfg.data.val_fraction)
    z_train, y_train = encode_dataset(model, train, progress=progress)
    z_val, y_val = encode_dataset(model, val, progress=progress)
    clf = fit_classifier(z_train, y_train, cfg.epochs, cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.seed, progress,
                         cfg.label_model_ridge)  # fmt: skip
    save_attribute_model(cfg.out, clf, library)
    write_lineage(cfg.out, cfg.autoencoder, lineage)
    aucs = classifier_aurocs(clf, z_val, y_val)
    metrics = {
        "trained_attributes": clf.trained_attributes,
        "val_auroc": aucs,
        "val_auroc_mean": float(np.mean(list(aucs.values()))) if aucs else float("nan"),
    }
    storage.write_text(storage.join(cfg.out, "metrics_stage2.json"), json.dumps(metrics, indent=2))
    return metrics
