"""Configs of the single-process trainers for stage 1 (autoencoder) and stage 2 (attribute classifiers).

YAML files in ``configs/train/`` fill these; the Ray Train jobs reuse the same sections.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fet.config import ConfigError, from_dict
from fet.diffusion.timesteps import TimestepSampling
from fet.models.presets import PRESETS, ImageModelConfig


def resolve_model(spec: dict[str, Any], where: str = "model") -> ImageModelConfig:
    """``{preset: tiny, image_size: 32, ...}`` → a validated ``ImageModelConfig``."""
    spec = dict(spec)
    name = spec.pop("preset", "tiny")
    if name not in PRESETS:
        raise ConfigError(f"{where}.preset: unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    base = dataclasses.asdict(PRESETS[name]())
    base.update(spec)
    try:
        return from_dict(ImageModelConfig, base, where=where)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from e


@dataclass
class ImageDataConfig:
    images: str = "data/synthtalk/images"  # folder (local or s3://) of aligned face images
    attributes: str | None = None  # CelebAMask-HQ-attribute-anno.txt-style file
    val_fraction: float = 0.1
    limit: int | None = None


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999


@dataclass
class Stage1Config:
    """Stage 1: semantic encoder + conditional denoiser with L_simple (paper Eq. 7, Algorithm 1)."""

    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny"})
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 2000
    batch_size: int = 16
    seed: int = 0
    out: str = "outputs/stage1"
    log_every: int = 50
    sample_every: int = 500
    eval_steps: int = 20  # DDIM steps for the reconstruction check and samples
    timesteps: TimestepSampling = "uniform"  # how L_simple draws t (fet.diffusion.timesteps)

    @property
    def image_model(self) -> ImageModelConfig:
        return resolve_model(self.model)

    def validate(self) -> None:
        self.image_model  # noqa: B018 - raises on a bad model section
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"steps={self.steps}, batch_size={self.batch_size}: expected positive values")


@dataclass
class Stage2Config:
    """Stage 2: linear attribute classifiers on frozen z_sem with BCE (paper Eq. 8, Algorithm 2)."""

    autoencoder: str = "outputs/stage1"  # directory written by stage 1
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    out: str = "outputs/stage1"  # the classifier is written next to the autoencoder by default
    epochs: int = 300
    lr: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 64
    seed: int = 0
    default_alpha: float = 0.3
    max_abs_alpha: float = 1.0
    edit_direction: str = "classifier"  # or "label_model" (fet.editing.label_model), fitted here either way
    label_model_ridge: float = 10.0


@dataclass
class AudioStageConfig:
    """Stage A: Audio2Mesh (L1 on vertices) + Audio2Pose on talking clips with landmarks (paper 3.4, App. A)."""

    clips: str = "data/synthtalk/clips"  # folder with <split>/<clip>.mp4 + .npz (fet.data.clip_folder)
    audio: dict[str, Any] = field(default_factory=lambda: {"kind": "mel"})  # AudioEncoderConfig fields
    audio2mesh: dict[str, Any] = field(default_factory=dict)  # Audio2MeshConfig overrides
    audio2pose: dict[str, Any] = field(default_factory=dict)  # Audio2PoseConfig overrides
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    grad_clip: float = 1.0
    seed: int = 0
    limit: int | None = None  # clips per split
    out: str = "outputs/audio"
    log_every: int = 50

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"steps={self.steps}, batch_size={self.batch_size}: expected positive values")


@dataclass
class Stage3Config:
    """Stage 3: talker denoiser + PoseGuider, E_sem and codec frozen (paper Eq. 9, Algorithm 3)."""

    autoencoder: str = "outputs/stage1"  # stage-1 directory: the denoiser is initialised from it
    clips: str = "data/synthtalk/clips"
    guider: dict[str, Any] = field(default_factory=dict)  # PoseGuiderConfig overrides
    guider_lr_scale: float = 10.0  # PoseGuider learning rate / optim.lr (the guider starts from zero outputs)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 1000
    batch_size: int = 16
    seed: int = 0
    limit: int | None = None  # clips per split
    out: str = "outputs/stage3"
    log_every: int = 50
    sample_every: int = 500
    eval_steps: int = 20

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"steps={self.steps}, batch_size={self.batch_size}: expected positive values")
