"""An ``AutoencoderKL`` with the SD-VAE layout (512 px → 64×64×4) and random weights, saved as a diffusers
directory: the same shapes and cost as the real SD-VAE for speed measurements, meaningless pictures."""

from __future__ import annotations

from pathlib import Path


def random_sd_vae(path: Path) -> str:
    from diffusers import AutoencoderKL

    AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
    ).save_pretrained(path)  # fmt: skip
    return str(path)
