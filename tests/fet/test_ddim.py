import pytest
import torch

from fet.diffusion.ddim import ddim_invert, ddim_sample
from fet.metrics.image_quality import psnr
from tests.fet.helpers import tiny_config


def test_inversion_is_exact_for_zero_noise_prediction():
    cfg = tiny_config()
    x0 = torch.randn(2, 3, 16, 16)
    eps0 = lambda x, t: torch.zeros_like(x)  # noqa: E731
    x_T = ddim_invert(eps0, x0, 20, cfg)
    assert x_T.abs().mean() < 0.2 * x0.abs().mean()  # reaches the (nearly pure noise) end of the schedule
    assert torch.allclose(ddim_sample(eps0, x_T, 20, cfg), x0, atol=1e-4)


def test_inversion_then_decoding_reconstructs_the_input(trained_tiny):
    """Measured 36.6 dB with 100 DDIM steps (31.1 dB with 50) on the overfitted tiny model; assert 33 dB."""
    model, images, _ = trained_tiny
    rec = model.reconstruct(images, steps=100)
    value = psnr(rec, images)
    assert value > 33.0, value
    # and the stochastic code matters: decoding noise that is not x_T does not give the image back
    z = model.encode(images)
    other = model.render(torch.randn_like(images), z, steps=50)
    assert psnr(other, images) < value - 10


def test_callback_and_step_validation(trained_tiny):
    model, images, _ = trained_tiny
    seen = []
    model.render(
        torch.randn(1, 3, 16, 16), model.encode(images[:1]), steps=5, callback=lambda i, n, x: seen.append((i, n))
    )
    assert seen == [(i, 5) for i in range(5)]
    with pytest.raises(ValueError, match="steps=0"):
        model.render(torch.randn(1, 3, 16, 16), model.encode(images[:1]), steps=0)
    with pytest.raises(ValueError, match="x_T: expected"):
        model.render(torch.randn(1, 3, 8, 8), model.encode(images[:1]), steps=5)
