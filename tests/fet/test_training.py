import pytest
import torch

from fet.training.losses import attribute_bce_loss


def test_stage1_loss_falls_when_overfitting(trained_tiny):
    _, _, losses = trained_tiny
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first, (first, last)


def test_bce_ignores_unknown_labels():
    logits = torch.tensor([[2.0, -1.0, 5.0]])
    full = attribute_bce_loss(logits[:, :2], torch.tensor([[1, 0]]))
    masked = attribute_bce_loss(logits, torch.tensor([[1, 0, -1]]))
    assert torch.allclose(full, masked)
    with pytest.raises(ValueError, match="every label in the batch is unknown"):
        attribute_bce_loss(logits, torch.full((1, 3), -1))
    with pytest.raises(ValueError, match="labels: expected shape"):
        attribute_bce_loss(logits, torch.zeros(1, 2, dtype=torch.long))
