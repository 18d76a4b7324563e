"""Linear attribute classifiers on the normalised semantic code (paper 3.3 and Eq. 8; DiffAE Sec. 4.2).

z is normalised with per-dimension mean/std measured on the stage-1 training set; one logistic
regression per CelebA attribute reads the normalised code. Attributes without labels in the training
data are marked untrained and cannot be edited.
"""

from __future__ import annotations

import torch
from torch import nn

from fet.editing.attributes import ATTRIBUTE_INDEX, CELEBA_ATTRIBUTES
from fet.editing.label_model import AttributeLabelModel


class AttributeClassifier(nn.Module):
    """40 linear classifiers ``σ(wᵀ norm(z) + b)`` plus the normalisation statistics of z_sem, and
    optionally the attribute label model fitted on the same faces (``label_model=True``)."""

    def __init__(self, z_dim: int, num_attributes: int = len(CELEBA_ATTRIBUTES), label_model: bool = False) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.label_model = AttributeLabelModel(z_dim, num_attributes) if label_model else None
        self.linear = nn.Linear(z_dim, num_attributes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("z_mean", torch.zeros(z_dim))
        self.register_buffer("z_std", torch.ones(z_dim))
        self.register_buffer("trained", torch.zeros(num_attributes, dtype=torch.bool))

    @torch.no_grad()
    def fit_normalizer(self, z: torch.Tensor) -> None:
        """Set the mean/std of z_sem from codes of the training set, (N, z_dim)."""
        if z.ndim != 2 or z.shape[1] != self.z_dim or z.shape[0] < 2:
            raise ValueError(f"z: expected (N >= 2, {self.z_dim}) semantic codes, got {tuple(z.shape)}")
        self.z_mean.copy_(z.mean(0))
        self.z_std.copy_(z.std(0).clamp_min(1e-6))

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.z_mean) / self.z_std

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z_sem (B, z_dim) → logits (B, 40)."""
        return self.linear(self.normalize(z.to(self.linear.weight)))

    def direction(self, attribute: str) -> torch.Tensor:
        """Unit vector (z_dim,) in normalised space along which the attribute's logit grows."""
        i = ATTRIBUTE_INDEX[attribute]
        if not bool(self.trained[i]):
            trained = [a for a, t in zip(CELEBA_ATTRIBUTES, self.trained.tolist()) if t]
            raise ValueError(f"attribute {attribute!r} has no trained classifier; editable: {trained}")
        w = self.linear.weight[i]
        return w / w.norm().clamp_min(1e-12)

    def labels(self, z: torch.Tensor) -> torch.Tensor:
        """z_sem (B, z_dim) → the attributes the trained classifiers read as present, booleans (B, 40)."""
        return (self(z) > 0) & self.trained

    @property
    def trained_attributes(self) -> list[str]:
        return [a for a, t in zip(CELEBA_ATTRIBUTES, self.trained.tolist()) if t]
