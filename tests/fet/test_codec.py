import tempfile

import pytest
import torch
from diffusers import AutoencoderKL

from fet.autoencoder import DiffusionAutoencoder
from fet.models.codec import AutoencoderKLCodec, build_codec
from fet.models.presets import preset


def save_tiny_vae(path, latent_channels=4):
    """A tiny random AutoencoderKL with SD-VAE's interface (8x downsampling, 4 latent channels)."""
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=32,
    )  # fmt: skip
    vae.save_pretrained(str(path), safe_serialization=True)
    return vae


def latent_config(path, **kw):
    return preset(
        "tiny", image_size=32, codec="autoencoder_kl", codec_path=str(path), latent_channels=4, latent_downsample=8,
        latent_scale=0.18215, base_channels=16, channel_mult=(1, 2), encoder_channel_mult=(1, 2), z_dim=16, **kw,
    )  # fmt: skip


def test_autoencoder_kl_codec_loads_a_saved_model(tmp_path):
    vae = save_tiny_vae(tmp_path / "vae")
    cfg = latent_config(tmp_path / "vae")
    codec = build_codec(cfg)
    assert isinstance(codec, AutoencoderKLCodec)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    lat = codec.encode(x)
    assert lat.shape == (2, 4, 4, 4)
    with torch.no_grad():
        expected = vae.encode(x).latent_dist.mean * 0.18215
    assert torch.allclose(lat, expected, atol=1e-5)
    assert codec.decode(lat).shape == (2, 3, 32, 32)
    # the whole autoencoder runs in that latent space
    model = DiffusionAutoencoder(cfg)
    z = model.encode(x)
    x_T = model.encode_stochastic(x, z, steps=3)
    assert x_T.shape == (2, 4, 4, 4)
    assert model.render(x_T, z, steps=3).shape == (2, 3, 32, 32)


def test_codec_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a diffusers AutoencoderKL directory"):
        build_codec(latent_config(tmp_path / "nothing"))
    save_tiny_vae(tmp_path / "vae8", latent_channels=8)
    with pytest.raises(ValueError, match="has 8 latent channels.*expects latent_channels=4"):
        build_codec(latent_config(tmp_path / "vae8"))
    weights = tmp_path / "vae8" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-500])  # an interrupted copy: one line with the path and why
    with pytest.raises(ValueError, match=r"vae8'?: the AutoencoderKL does not load: .*incomplete metadata"):
        build_codec(latent_config(tmp_path / "vae8"))
    with pytest.raises(ValueError, match=rf"{weights}: cut short: "):  # what a bundle's check reads, before loading
        AutoencoderKLCodec.check_weights(str(tmp_path / "vae8"))
    with pytest.raises(FileNotFoundError, match="nothing: no config.json; expected a diffusers AutoencoderKL"):
        AutoencoderKLCodec.check_weights(str(tmp_path / "nothing"))


def test_autoencoder_kl_codec_loads_from_s3_and_keeps_no_copy(tmp_path, s3_bucket, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # S3 copies land here, to look for after
    from fet import storage

    vae = save_tiny_vae(tmp_path / "vae")
    storage.upload_dir(tmp_path / "vae", f"{s3_bucket}/sd-vae")
    codec = build_codec(latent_config(f"{s3_bucket}/sd-vae"))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(codec.encode(x), vae.encode(x).latent_dist.mean * 0.18215, atol=1e-5)
    assert not list(tmp_path.rglob("fet-s3-*/**/diffusion_pytorch_model.safetensors"))  # gone once loaded
    with pytest.raises(storage.StorageError, match="no objects under this prefix"):
        build_codec(latent_config(f"{s3_bucket}/no-vae"))


def test_a_bundle_with_a_codec_and_wav2vec2_is_checked_whole_before_it_loads(tmp_path):
    """The paper's bundle: SD-VAE latents and wav2vec2 features, each a folder of weights copied into the
    bundle. Whole, it passes ``check_bundle`` and loads; either folder cut short is named by the check."""
    from fet.audio.features import AudioEncoderConfig
    from fet.bundle import BundleError, check_bundle, load_bundle
    from fet.models.pose_guider import PoseGuiderConfig
    from tests.fet.helpers import save_tiny_wav2vec2
    from tests.fet.talking_helpers import build_bundle

    save_tiny_vae(tmp_path / "vae")
    save_tiny_wav2vec2(tmp_path / "w2v", hidden=16)
    ae = DiffusionAutoencoder(latent_config(tmp_path / "vae"))
    guider = PoseGuiderConfig(stem_channels=(4, 8, 8, 16), attention_head_dim=16, num_groups=4)  # 8x down
    bundle = build_bundle(tmp_path, ae, AudioEncoderConfig(kind="wav2vec2", path=str(tmp_path / "w2v"), stack=2),
                          guider=guider)  # fmt: skip
    check_bundle(bundle)
    loaded = load_bundle(bundle)
    assert isinstance(loaded.codec, AutoencoderKLCodec) and loaded.audio_encoder.dim == 32
    for folder, name in (("codec", "diffusion_pytorch_model.safetensors"), ("audio_encoder", "model.safetensors")):
        weights = tmp_path / "bundle" / folder / name
        whole = weights.read_bytes()
        weights.write_bytes(whole[:-100])
        with pytest.raises(BundleError, match=f"bundle {bundle}: {weights}: cut short: "):
            check_bundle(bundle)
        weights.write_bytes(whole)
