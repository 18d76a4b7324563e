"""The mean semantic code of faces with given attributes, for edits that change one attribute only.

A classifier's normal (paper Eq. 1) points where its logit grows fastest; when attributes go together in
the data (hair colour and hair length, a hat and the hair it hides) that direction moves the others too.
This model instead predicts the normalised z_sem of a face from its labels — a ridge regression on the
labels and their pairwise products — so an edit can move a code by the predicted difference between the
face's labels and the same labels with one attribute changed (and what that change implies), holding the
rest fixed. The pairwise terms let the shift depend on the face: blond hair on a man is drawn differently
from blond hair on a woman. The fit is closed-form from sums over the training faces, which ranks of a
distributed job add up before solving.
"""

from __future__ import annotations

import torch
from torch import nn


class AttributeLabelModel(nn.Module):
    """``E[norm(z_sem) | labels] ≈ φ(labels) · W`` with φ = (1, labels, pairwise products of labels)."""

    def __init__(self, z_dim: int, num_attributes: int) -> None:
        super().__init__()
        self.z_dim, self.num_attributes = z_dim, num_attributes
        self.register_buffer("pairs", torch.triu_indices(num_attributes, num_attributes, 1), persistent=False)
        self.num_features = 1 + num_attributes + self.pairs.shape[1]
        self.register_buffer("weight", torch.zeros(self.num_features, z_dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def features(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels (B, A), 1 = present (anything else counts as absent) → φ (B, F) in float64."""
        if labels.ndim != 2 or labels.shape[1] != self.num_attributes:
            raise ValueError(f"labels: expected (B, {self.num_attributes}), got {tuple(labels.shape)}")
        x = (labels == 1).double()
        return torch.cat([torch.ones_like(x[:, :1]), x, x[:, self.pairs[0]] * x[:, self.pairs[1]]], 1)

    def statistics(self, z_norm: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The sums φᵀφ (F, F) and φᵀz (F, d) over a set of faces; add them up over shards, then ``solve``."""
        if z_norm.ndim != 2 or z_norm.shape != (labels.shape[0], self.z_dim):
            raise ValueError(f"z_norm: expected ({labels.shape[0]}, {self.z_dim}), got {tuple(z_norm.shape)}")
        phi = self.features(labels)
        return phi.T @ phi, phi.T @ z_norm.double()

    @torch.no_grad()
    def solve(self, phi_phi: torch.Tensor, phi_z: torch.Tensor, ridge: float) -> None:
        """Set W from the summed statistics; ``ridge`` > 0 penalises every weight but the intercept."""
        if not ridge > 0:
            raise ValueError(f"ridge={ridge}: expected > 0 (the pairwise terms outnumber the faces of a small set)")
        if phi_phi[0, 0] < 2:
            raise ValueError(f"the label model needs at least 2 faces, got {int(phi_phi[0, 0])}")
        penalty = torch.full((self.num_features,), float(ridge), dtype=torch.float64, device=phi_phi.device)
        penalty[0] = 0.0
        w = torch.linalg.solve(phi_phi.double() + torch.diag(penalty), phi_z.double())
        self.weight.copy_(w.to(self.weight))
        self.fitted.fill_(True)

    def fit(self, z_norm: torch.Tensor, labels: torch.Tensor, ridge: float) -> AttributeLabelModel:
        self.solve(*self.statistics(z_norm, labels), ridge)
        return self

    def shift(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Predicted change of normalised z_sem (B, d) when a face's labels go from ``before`` to ``after``."""
        if not bool(self.fitted):
            raise ValueError("the attribute label model is not fitted; stage 2 fits it (fet.training.stage2)")
        delta = self.features(after) - self.features(before)
        return (delta @ self.weight.double()).to(self.weight.dtype)
