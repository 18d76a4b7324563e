"""Preprocessing of talking clips and face images into shards (see ``fet.data.shards``)."""

from fet.data.preprocess.clips import ClipPreprocessor, add_audio_features
from fet.data.preprocess.config import ClipFilters, PreprocessConfig, RayDataConfig, encoder_name
from fet.data.preprocess.images import ImagePreprocessor
from fet.data.preprocess.rows import Reject
from fet.data.preprocess.run import (
    add_summary,
    check_models,
    make_processor,
    pending,
    retry_message,
    run_serial,
    shard_kind,
)

__all__ = [
    "ClipFilters",
    "ClipPreprocessor",
    "ImagePreprocessor",
    "PreprocessConfig",
    "RayDataConfig",
    "Reject",
    "add_audio_features",
    "add_summary",
    "check_models",
    "encoder_name",
    "make_processor",
    "pending",
    "retry_message",
    "run_serial",
    "shard_kind",
]
