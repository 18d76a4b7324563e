import numpy as np
import pytest
import torch

from fet.training.ema import EMA
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


def test_ema_warms_up_so_a_short_run_exports_what_it_learned_and_resumes_exactly():
    model = torch.nn.Linear(3, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.99)
    model.weight.data.fill_(1.0)  # training has moved the weights away from their start
    for _ in range(120):
        ema.update(model)
    # the n-th update keeps min(0.99, (1+n)/(10+n)) of the shadow: the start's share is their product
    start_share = float(np.prod([min(0.99, (1 + n) / (10 + n)) for n in range(120)]))
    assert ema.shadow.weight[0, 0].item() == pytest.approx(1 - start_share, abs=1e-6)
    assert start_share < 0.01 < 0.99**120  # a flat 0.99 would still hold 30% of the start
    assert ema.current_decay() == pytest.approx(121 / 130)  # still warming up: (1 + 120) / (10 + 120)

    resumed = EMA(model, decay=0.99)  # a restarted run: shadow from the checkpoint, updates = its step
    resumed.load_state_dict(ema.state_dict())
    resumed.updates = 120
    model.weight.data.fill_(2.0)
    ema.update(model)
    resumed.update(model)
    assert torch.equal(ema.shadow.weight, resumed.shadow.weight)
    with pytest.raises(ValueError, match="ema_decay=1.0"):
        EMA(model, decay=1.0)
