"""Model size presets for the image feature-space module (paper 3.3).

A preset is a tiny factory returning an ``ImageModelConfig``; ``PRESETS`` drives CLI choices and YAML
``preset:`` keys. ``tiny`` runs in seconds on a CPU in pixel space; ``paper`` is the configuration of the
paper (Table 5: 512 px images, 512-d semantic code, T = 1000) in SD-VAE latent space.

The ``paper`` channel layout is DiffAE's FFHQ-256 autoencoder (base 128 channels, multipliers
1,1,2,2,4,4, two res-blocks per level, attention at 16x16, 512-d style/z_sem) scaled to a 64x64x4
latent: the SD-VAE already performs the first three 2x downsamplings (512 → 64), so the denoiser keeps
DiffAE's levels from 64x64 down (multipliers 2,2,4,4 → 64, 32, 16, 8) and the semantic encoder its
deeper half-UNet (2,2,4,4,4 → down to 4x4).

``prediction_type`` is what the denoiser outputs. ``paper`` keeps DiffAE's ε (Eq. 7). ``tiny`` predicts
v = √ᾱ·ε − √(1−ᾱ)·x_0 (Salimans & Ho 2022): at high noise that is close to −x_0, a picture the small
network can draw from z_sem, where an ε-model must output x_t itself to within a factor of 1/√ᾱ. On the
embedded default after 600 CPU steps a v-model renders a face from fresh noise (15 dB against the face,
above the 12.5 dB of two unrelated faces) and z_sem decides 57% of the face; an ε-model of the same
budget gives noise (5.8 dB) and 27% (``benchmarks/semantic_control.py``). The semantic edits need that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal


@dataclass
class ImageModelConfig:
    """Everything needed to build codec + semantic encoder + conditional denoiser."""

    image_size: int = 64  # pixels of the (square) aligned face crop
    codec: Literal["identity", "autoencoder_kl"] = "identity"
    codec_path: str | None = None  # directory (or s3:// URI) of a diffusers AutoencoderKL
    latent_channels: int = 3  # channels the denoiser sees (3 for pixels, 4 for SD-VAE)
    latent_downsample: int = 1  # image_size / latent size (1 for pixels, 8 for SD-VAE)
    latent_scale: float = 1.0  # multiply codec latents by this (SD-VAE: 0.18215)
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (16,)  # latent resolutions that get self-attention
    encoder_channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    z_dim: int = 64  # size of the semantic code z_sem (512 in the paper)
    encoder_head: Literal["pool", "flatten"] = "pool"  # E_sem's last feature map → z_sem (SemanticEncoder)
    num_groups: int = 8  # GroupNorm groups
    attention_head_dim: int = 32
    dropout: float = 0.0
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4  # DiffAE's linear schedule
    beta_end: float = 0.02
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"  # what the denoiser outputs (module doc)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.latent_downsample

    def validate(self) -> None:
        if self.image_size % self.latent_downsample:
            raise ValueError(
                f"image_size={self.image_size} must be divisible by latent_downsample={self.latent_downsample}"
            )
        levels = len(self.channel_mult) - 1
        if self.latent_size % (2**levels):
            raise ValueError(
                f"latent size {self.latent_size} must be divisible by 2**{levels} for channel_mult={self.channel_mult}"
            )
        for mults, name in ((self.channel_mult, "channel_mult"), (self.encoder_channel_mult, "encoder_channel_mult")):
            if not mults or any(m <= 0 for m in mults):
                raise ValueError(f"{name}={mults}: expected positive multipliers")
            for m in mults:
                if (self.base_channels * m) % self.num_groups:
                    raise ValueError(
                        f"{name}: {self.base_channels}*{m} channels not divisible by num_groups={self.num_groups}"
                    )
        if self.encoder_head not in ("pool", "flatten"):
            raise ValueError(f"encoder_head={self.encoder_head!r}: expected 'pool' or 'flatten'")
        if self.encoder_head == "flatten" and self.image_size % 2 ** (len(self.encoder_channel_mult) - 1):
            raise ValueError(
                f"encoder_head=flatten: image_size={self.image_size} must be divisible by"
                f" 2**{len(self.encoder_channel_mult) - 1} for encoder_channel_mult={self.encoder_channel_mult}"
            )
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type={self.prediction_type!r}: expected 'epsilon' or 'v_prediction'")
        if self.codec == "autoencoder_kl" and not self.codec_path:
            raise ValueError("codec=autoencoder_kl needs codec_path (a directory or s3:// URI)")
        if self.codec == "identity" and (self.latent_channels != 3 or self.latent_downsample != 1):
            raise ValueError("codec=identity works in pixel space: latent_channels=3, latent_downsample=1")


def tiny() -> ImageModelConfig:
    """Pixel space, 64 px, ~1M parameters, v-prediction: trains in minutes on a CPU."""
    return ImageModelConfig(prediction_type="v_prediction")


def paper() -> ImageModelConfig:
    """512 px faces, SD-VAE latents (64x64x4), 512-d z_sem, DiffAE FFHQ-256 layout (see module doc)."""
    return ImageModelConfig(
        image_size=512,
        codec="autoencoder_kl",
        codec_path="s3://fet-models/sd-vae-ft-mse",
        latent_channels=4,
        latent_downsample=8,
        latent_scale=0.18215,
        base_channels=128,
        channel_mult=(2, 2, 4, 4),
        num_res_blocks=2,
        attention_resolutions=(16,),
        encoder_channel_mult=(2, 2, 4, 4, 4),
        z_dim=512,
        num_groups=32,
        attention_head_dim=64,
        dropout=0.1,
    )


PRESETS: dict[str, Callable[[], ImageModelConfig]] = {"tiny": tiny, "paper": paper}


def preset(name: str, **overrides) -> ImageModelConfig:
    """A preset by name with field overrides, e.g. ``preset("tiny", image_size=32)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; expected one of {sorted(PRESETS)}")
    cfg = replace(PRESETS[name](), **overrides)
    cfg.validate()
    return cfg


__all__ = ["PRESETS", "ImageModelConfig", "paper", "preset", "tiny"]
