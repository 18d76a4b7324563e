"""Image codec E_img / D_img (paper 3.3): pixels ↔ the space the denoiser works in.

``IdentityCodec`` is pixel space (the embedded default at 64–128 px). ``AutoencoderKLCodec`` is the
paper's latent space: a diffusers ``AutoencoderKL`` (SD-VAE, 512 px → 64×64×4) loaded from a local
directory or an ``s3://`` prefix with ``from_pretrained``. Codecs are frozen: they have no trainable
state of ours and are never saved in our checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from fet import storage
from fet.models.presets import ImageModelConfig
from fet.weight_files import check_weights_file, load_failure_reason

WEIGHTS = "diffusion_pytorch_model.safetensors"  # the file AutoencoderKL.from_pretrained loads


class IdentityCodec(nn.Module):
    """Pixel space: images in [-1, 1] are their own latents."""

    latent_channels = 3
    downsample = 1

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent


class AutoencoderKLCodec(nn.Module):
    """diffusers ``AutoencoderKL``; latents are the posterior mean times ``scale`` (0.18215 for SD-VAE)."""

    def __init__(self, vae: nn.Module, scale: float) -> None:
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.scale = scale
        self.latent_channels = int(vae.config.latent_channels)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)

    @staticmethod
    def check_weights(path: str) -> None:
        """FileNotFoundError or ValueError unless ``path`` holds a config.json and whole weights (a few small
        reads: ``check_weights_file``), as a bundle's check makes before its replicas each load the codec."""
        if not storage.exists(storage.join(path, "config.json")):
            raise FileNotFoundError(f"codec {path}: no config.json; expected a diffusers AutoencoderKL directory")
        check_weights_file(storage.join(path, WEIGHTS))

    @classmethod
    def from_pretrained(cls, path: str, scale: float, dtype: torch.dtype = torch.float32) -> AutoencoderKLCodec:
        from diffusers import AutoencoderKL

        with storage.local_copy(path, tree=True) as local:
            if not (local / "config.json").is_file():
                raise FileNotFoundError(
                    f"codec_path {path!r}: expected a diffusers AutoencoderKL directory with config.json and "
                    "diffusion_pytorch_model.safetensors"
                )
            try:
                vae = AutoencoderKL.from_pretrained(str(local), torch_dtype=dtype, use_safetensors=True)
            except Exception as e:  # diffusers', safetensors' and torch's errors alike, with the path and why
                why = load_failure_reason(e)
                raise ValueError(f"codec_path {path!r}: the AutoencoderKL does not load: {why}") from e
        return cls(vae, scale)

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        image = image.to(device=self.vae.device, dtype=self.vae.dtype)
        return self.vae.encode(image).latent_dist.mean * self.scale  # (B, 4, H/8, W/8)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        latent = latent.to(device=self.vae.device, dtype=self.vae.dtype)
        return self.vae.decode(latent / self.scale).sample.clamp(-1, 1)  # (B, 3, H, W)


def build_codec(cfg: ImageModelConfig) -> nn.Module:
    """The codec named by the config, checked against the latent shape the denoiser expects."""
    if cfg.codec == "identity":
        return IdentityCodec()
    codec = AutoencoderKLCodec.from_pretrained(cfg.codec_path, cfg.latent_scale)
    if (codec.latent_channels, codec.downsample) != (cfg.latent_channels, cfg.latent_downsample):
        raise ValueError(
            f"codec at {cfg.codec_path}: has {codec.latent_channels} latent channels and downsamples "
            f"{codec.downsample}x, but the model config expects latent_channels={cfg.latent_channels}, "
            f"latent_downsample={cfg.latent_downsample}"
        )
    return codec
