"""Shard rows in flight: the empty row templates, reject rows and frame encoding."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from fet.audio.load import SAMPLE_RATE
from fet.data.sources import ClipItem, ImageItem
from fet.landmarks.align import crop_square


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    return crop_square(rgb, (0.0, 0.0, float(rgb.shape[0])), size)


class Reject(Exception):  # noqa: N818 - a control-flow signal, not an error of ours
    """An input (or one segment of it) that is not kept: ``reason`` is a short code for the rejects
    table (no_audio, no_face, too_short, corrupt, empty_file, unreadable_codec, ...), ``detail`` the
    message naming the input and what was expected."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def base_row(item: ClipItem | ImageItem, input_uri: str, item_segments: int) -> dict[str, Any]:
    return {"source": item.source, "item_id": item.item_id, "split": item.split, "input": input_uri,
            "item_segments": item_segments, "reject_reason": "", "reject_detail": ""}  # fmt: skip


EMPTY_CLIP = {
    "clip_id": "", "speaker": "", "segment": 0, "start_seconds": 0.0, "fps": 25, "num_frames": 0, "size": 0,
    "frames": [], "audio": b"", "sample_rate": SAMPLE_RATE, "has_audio": False, "audio_features": b"",
    "audio_encoder": "", "landmarks": b"", "transform": b"", "blendshapes": b"", "pose": b"", "face_found": b"",
    "landmark_source": "", "face_ratio": 0.0, "jitter": 0.0, "sync_offset": 0, "sync_corr": 0.0,
    "source_width": 0, "source_height": 0, "source_fps": 0.0, "face_px": 0.0, "decoder": "",
    "t_decode": 0.0, "t_landmarks": 0.0, "t_audio": 0.0, "t_encode": 0.0,
}  # fmt: skip

EMPTY_IMAGE = {"image_id": "", "image": b"", "attributes": [-1] * 40, "size": 0, "num_faces": 0,
               "t_decode": 0.0, "t_landmarks": 0.0, "t_encode": 0.0}  # fmt: skip
