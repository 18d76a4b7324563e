"""The diffusion autoencoder (paper 3.3): image ↔ (semantic code z_sem, stochastic code x_T).

    z_sem = E_sem(image)                                   (encode)
    x_T   = DDIM-invert(E_img(image); ε_θ(·, ·, z_sem))     (encode_stochastic, η = 0)
    image = D_img(DDIM-sample(x_T; ε_θ(·, ·, z_sem)))       (render / decode)

Editing happens on z_sem between encoding and rendering (``fet.editing``).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from fet.checkpoint import load_weights, read_component_config, save_component
from fet.config import from_dict
from fet.diffusion.ddim import Callback, ddim_invert, ddim_sample
from fet.images import check_image_batch
from fet.models.codec import build_codec
from fet.models.denoiser import ConditionalDenoiser
from fet.models.presets import ImageModelConfig
from fet.models.semantic_encoder import SemanticEncoder


class DiffusionAutoencoder(nn.Module):
    """Codec + semantic encoder + conditional denoiser, with DiffAE's encode/invert/render API."""

    def __init__(self, cfg: ImageModelConfig, codec: nn.Module | None = None) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.codec = codec if codec is not None else build_codec(cfg)
        self.encoder = SemanticEncoder(cfg)
        self.denoiser = ConditionalDenoiser(cfg)

    @property
    def device(self) -> torch.device:
        """Where the denoiser lives: inputs from anywhere are moved here, results stay here."""
        return self.denoiser.conv_in.weight.device

    # -- encoding ---------------------------------------------------------------------------------
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W) in [-1, 1] → z_sem (B, z_dim)."""
        check_image_batch(image, self.cfg.image_size)
        return self.encoder(image)

    def to_latent(self, image: torch.Tensor) -> torch.Tensor:
        check_image_batch(image, self.cfg.image_size)
        return self.codec.encode(image.to(self.device))

    def denoise_fn(self, z_sem: torch.Tensor):
        """The denoiser with z_sem bound: the contract of ``fet.diffusion.ddim``."""
        return lambda x, t: self.denoiser(x, t, z_sem)

    @torch.no_grad()
    def encode_stochastic(
        self, image: torch.Tensor, z_sem: torch.Tensor, steps: int = 50, callback: Callback | None = None
    ) -> torch.Tensor:
        """image (B, 3, H, W) + its z_sem → x_T (B, C, h, w) by deterministic DDIM inversion."""
        return ddim_invert(self.denoise_fn(z_sem), self.to_latent(image), steps, self.cfg, callback)

    # -- decoding ---------------------------------------------------------------------------------
    @torch.no_grad()
    def render(
        self, x_T: torch.Tensor, z_sem: torch.Tensor, steps: int = 50, callback: Callback | None = None
    ) -> torch.Tensor:
        """(x_T (B, C, h, w), z_sem (B, z_dim)) → image (B, 3, H, W) in [-1, 1]."""
        shape = (self.cfg.latent_channels, self.cfg.latent_size, self.cfg.latent_size)
        if x_T.ndim != 4 or tuple(x_T.shape[1:]) != shape:
            raise ValueError(f"x_T: expected (B, {shape[0]}, {shape[1]}, {shape[2]}), got {tuple(x_T.shape)}")
        if z_sem.shape != (x_T.shape[0], self.cfg.z_dim):
            raise ValueError(f"z_sem: expected ({x_T.shape[0]}, {self.cfg.z_dim}), got {tuple(z_sem.shape)}")
        latent = ddim_sample(self.denoise_fn(z_sem), x_T.to(self.device), steps, self.cfg, callback)
        return self.codec.decode(latent).clamp(-1, 1)

    decode = render

    @torch.no_grad()
    def reconstruct(self, image: torch.Tensor, steps: int = 50) -> torch.Tensor:
        z = self.encode(image)
        return self.render(self.encode_stochastic(image, z, steps), z, steps)

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        """``semantic_encoder`` and ``denoiser`` components (the codec is external and never copied)."""
        config = dataclasses.asdict(self.cfg)
        save_component(directory, "semantic_encoder", self.encoder, "semantic_encoder", config)
        save_component(directory, "denoiser", self.denoiser, "denoiser", config)

    @classmethod
    def load(cls, directory: str, codec: nn.Module | None = None, **config_overrides) -> DiffusionAutoencoder:
        """Rebuild from ``save``'s files; ``config_overrides`` may repoint e.g. ``codec_path``."""
        enc_cfg = read_component_config(directory, "semantic_encoder", "semantic_encoder")
        den_cfg = read_component_config(directory, "denoiser", "denoiser")
        if enc_cfg != den_cfg:
            raise ValueError(f"{directory}: semantic_encoder.json and denoiser.json describe different models")
        cfg = from_dict(ImageModelConfig, {**enc_cfg, **config_overrides}, where=f"{directory}/denoiser.json")
        model = cls(cfg, codec=codec)
        load_weights(directory, "semantic_encoder", model.encoder)
        load_weights(directory, "denoiser", model.denoiser)
        return model.eval()
