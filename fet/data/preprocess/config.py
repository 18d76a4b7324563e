"""The preprocessing job's configuration (``configs/data/*.yaml``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fet.audio.features import AudioEncoderConfig
from fet.config import ConfigError, from_dict, to_dict
from fet.data.sources import SourceConfig
from fet.landmarks.align import DEFAULT_SCALE


@dataclass
class ClipFilters:
    min_seconds: float = 1.0  # shorter inputs are rejected (too_short)
    max_seconds: float = 900.0  # longer inputs are rejected (too_long): bounds one actor's work
    min_face_ratio: float = 0.8  # share of frames with a detected face
    min_face_px: float = 0.0  # face crop side in source pixels (low-resolution faces)
    max_jitter: float | None = None  # landmark jitter, fraction of face height per frame
    min_sync: float | None = None  # mouth-opening / audio-loudness correlation
    require_audio: bool = True  # VFHQ has none: set false to keep frames-only clips
    max_missing_audio: float = 0.5  # seconds of a segment past the end of its audio track (short_audio)


@dataclass
class RayDataConfig:
    num_workers: int = 2  # clip/image actors
    cpus_per_worker: float = 0.9  # fractional: a pool taking every CPU starves Ray Data's read stage
    gpus_per_worker: float = 0.0
    audio_workers: int = 0  # > 0: audio features in their own actors (wav2vec2 on GPUs)
    gpus_per_audio_worker: float = 0.0
    # rows reach the shard writers in input order, so the same inputs make the same shards on every run;
    # false lets the rows of a slow input not hold back the writes of those after it (a large cluster)
    preserve_order: bool = True


@dataclass
class PreprocessConfig:
    """``configs/data/*.yaml``: inputs, output, crop and landmark settings, filters, Ray resources."""

    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    out: str = "data/shards/synthtalk"
    size: int = 64  # clip frame crops (the model's image size; 512 for the paper preset)
    image_size: int | None = None  # image crops; default = size
    fps: int = 25
    segment_seconds: float = 20.0  # long videos become several rows of at most this length
    crop_scale: float = DEFAULT_SCALE
    detect_every: int = 5  # face detection for the crop box on every Nth frame
    detection_size: int = 512  # long side of the frame copy the box detection runs on
    smooth_seconds: float = 0.5  # Gaussian smoothing of the crop centre
    landmark_size: int = 256  # crops are landmarked at most at this size (MediaPipe's own input is 256)
    jpeg_quality: int = 95
    audio: dict[str, Any] = field(default_factory=lambda: {"kind": "mel"})  # AudioEncoderConfig fields
    face_landmarker: str | None = None  # path or s3:// URI of face_landmarker.task; None: the packaged copy
    filters: ClipFilters = field(default_factory=ClipFilters)
    rows_per_shard: int = 16
    ray: RayDataConfig = field(default_factory=RayDataConfig)

    def validate(self) -> None:
        for i, s in enumerate(self.sources):
            s.validate(f"sources[{i}]")
        if not self.sources:
            raise ConfigError("sources: expected at least one data set")
        if self.size < 16 or self.fps < 1 or self.rows_per_shard < 1 or self.detect_every < 1:
            raise ConfigError("size >= 16, fps >= 1, rows_per_shard >= 1 and detect_every >= 1 are required")
        try:
            _ = self.audio_encoder
        except ValueError as e:
            raise ConfigError(f"audio: {e}") from e

    @property
    def audio_encoder(self) -> AudioEncoderConfig:
        return from_dict(AudioEncoderConfig, {**self.audio, "fps": self.fps}, where="audio")


def encoder_name(cfg: AudioEncoderConfig) -> str:
    """What a row's ``audio_features`` were computed with; trainers check it matches their config."""
    d = to_dict(cfg)
    return json.dumps({k: d[k] for k in ("kind", "path", "fps", "stack", "n_mels", "layer")}, sort_keys=True)
