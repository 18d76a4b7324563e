import pytest
import torch

from fet.autoencoder import DiffusionAutoencoder
from fet.images import ImageError
from fet.models.denoiser import ConditionalDenoiser
from fet.models.presets import ImageModelConfig, paper, preset
from fet.models.semantic_encoder import SemanticEncoder
from tests.fet.helpers import SIZE, smooth_images, tiny_config


def test_semantic_encoder_shape_and_determinism():
    cfg = tiny_config()
    enc = SemanticEncoder(cfg).eval()
    x = smooth_images(3)
    z1, z2 = enc(x), enc(x)
    assert z1.shape == (3, cfg.z_dim)
    assert torch.equal(z1, z2)
    # each sample's code depends only on its own image
    assert torch.allclose(enc(x[:1]), z1[:1], atol=1e-5)


def test_denoiser_is_zero_at_init_and_shapes():
    cfg = tiny_config()
    den = ConditionalDenoiser(cfg)
    x = torch.randn(2, 3, SIZE, SIZE)
    eps = den(x, torch.tensor([10, 500]), torch.randn(2, cfg.z_dim))
    assert eps.shape == x.shape
    assert torch.count_nonzero(eps) == 0  # zero-initialised output conv (DiffAE)


def test_denoiser_uses_time_and_semantic_code(trained_tiny):
    model, images, _ = trained_tiny
    z = model.encode(images[:2])
    x = torch.randn(2, 3, SIZE, SIZE)
    t = torch.tensor([300, 300])
    base = model.denoiser(x, t, z)
    assert not torch.allclose(base, model.denoiser(x, t + 400, z))
    assert not torch.allclose(base, model.denoiser(x, t, z.flip(0)))
    assert torch.equal(base, model.denoiser(x, t, z))


def test_level_residuals_hook_shapes():
    cfg = tiny_config()
    den = ConditionalDenoiser(cfg)
    assert den.level_resolutions == (SIZE, SIZE // 2)
    res = [torch.randn(1, c, r, r) for c, r in zip(den.level_channels, den.level_resolutions)]
    out = den(torch.randn(1, 3, SIZE, SIZE), torch.tensor([5]), torch.randn(1, cfg.z_dim), level_residuals=res)
    assert out.shape == (1, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="level_residuals: expected 2"):
        den(torch.randn(1, 3, SIZE, SIZE), torch.tensor([5]), torch.randn(1, cfg.z_dim), level_residuals=res[:1])


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(1, 3, SIZE + 1, SIZE), r"expected shape \(B, 3, 16, 16\)"),
        (torch.zeros(1, 1, SIZE, SIZE), r"expected shape"),
        (torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8), "expected a float tensor"),
        (torch.full((1, 3, SIZE, SIZE), 5.0), r"values must lie in \[-1, 1\]"),
    ],
)
def test_bad_image_input_is_named(bad, match):
    model = DiffusionAutoencoder(tiny_config())
    with pytest.raises(ImageError, match=match):
        model.encode(bad)


def test_paper_preset_matches_paper_table5():
    cfg = paper()
    cfg.validate()
    assert (cfg.image_size, cfg.z_dim, cfg.num_train_timesteps) == (512, 512, 1000)
    assert (cfg.latent_channels, cfg.latent_size) == (4, 64)
    assert cfg.codec == "autoencoder_kl"


def test_invalid_model_config_is_rejected():
    with pytest.raises(ValueError, match="divisible by 2\\*\\*2"):
        preset("tiny", image_size=18)
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("huge")
    with pytest.raises(ValueError, match="needs codec_path"):
        ImageModelConfig(codec="autoencoder_kl", latent_channels=4, latent_downsample=8).validate()


def test_flatten_head_reads_the_whole_last_map_and_round_trips(tmp_path):
    cfg = tiny_config(encoder_head="flatten")
    enc = SemanticEncoder(cfg).eval()
    last = cfg.base_channels * cfg.encoder_channel_mult[-1]
    r = cfg.image_size // 2 ** (len(cfg.encoder_channel_mult) - 1)
    assert isinstance(enc.out[-1], torch.nn.Linear) and enc.out[-1].in_features == last * r * r
    x = smooth_images(2)
    assert enc(x).shape == (2, cfg.z_dim)
    model = DiffusionAutoencoder(cfg).eval()
    model.save(str(tmp_path / "ae"))
    loaded = DiffusionAutoencoder.load(str(tmp_path / "ae")).eval()
    assert loaded.cfg.encoder_head == "flatten"
    assert torch.equal(loaded.encode(x), model.encode(x))


def test_bad_encoder_head_is_rejected():
    with pytest.raises(ValueError, match="encoder_head='mean'"):
        preset("tiny", encoder_head="mean")
    with pytest.raises(ValueError, match="encoder_head=flatten: image_size=36 must be divisible by 2\\*\\*3"):
        preset("tiny", image_size=36, channel_mult=(1, 2), encoder_head="flatten")
    preset("tiny", image_size=36, channel_mult=(1, 2))  # the pooling head takes any size
