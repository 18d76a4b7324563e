"""Image preprocessing: one face photo in, one image-shard row out (or a reject).

The crop is the one the pipeline makes at inference (``fet.landmarks.align``: centred on the
MediaPipe landmarks, 1.9× their extent), so training faces and user photos are framed alike.
SynthTalk faces are already aligned crops and are only resized.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from PIL import Image

from fet import storage
from fet.data.face_track import downscale
from fet.data.preprocess.config import PreprocessConfig
from fet.data.preprocess.rows import EMPTY_IMAGE, Reject, base_row, resize_square
from fet.data.shards import UNREACHABLE
from fet.data.sources import ImageItem
from fet.images import ImageError, encode_png, load_image
from fet.landmarks.align import crop_square, face_box
from fet.landmarks.detector import FaceLandmarkDetector


class ImagePreprocessor:
    """Turns ``ImageItem``s into image rows (aligned PNG crop + CelebA attributes)."""

    def __init__(self, cfg: PreprocessConfig) -> None:
        self.cfg = cfg
        self.size = cfg.image_size or cfg.size
        self.detector = FaceLandmarkDetector(cfg.face_landmarker)

    def __call__(self, item: ImageItem, skip: set[str] = frozenset()) -> list[dict[str, Any]]:
        row = {**EMPTY_IMAGE, **base_row(item, item.image, 1), "image_id": item.item_id,
               "attributes": [int(a) for a in item.attributes]}  # fmt: skip
        try:
            crop, faces = self._crop(item, row)
        except Reject as r:
            row.update(reject_reason=r.reason, reject_detail=r.detail)
            return [row]
        except storage.NotFoundError as e:  # listed, then deleted
            row.update(reject_reason="missing", reject_detail=str(e))
            return [row]
        except storage.StorageError as e:  # not the input's fault: tried again on the next run
            row.update(reject_reason=UNREACHABLE, reject_detail=str(e))
            return [row]
        except Exception as e:
            row.update(reject_reason="error", reject_detail=f"{item.image}: {type(e).__name__}: {e}")
            return [row]
        t = time.perf_counter()
        row.update(image=encode_png(crop), size=self.size, num_faces=faces)
        row["t_encode"] = time.perf_counter() - t
        return [row]

    def _crop(self, item: ImageItem, row: dict[str, Any]) -> tuple[Image.Image, int]:
        t = time.perf_counter()
        try:
            rgb = np.asarray(load_image(item.image))
        except ImageError as e:
            raise Reject("unreadable", str(e)) from e
        row["t_decode"] = time.perf_counter() - t
        t = time.perf_counter()
        if item.aligned:
            crop, faces = resize_square(rgb, self.size), 1
        else:
            small = downscale(rgb, self.cfg.detection_size)
            face = self.detector.detect(small)
            if face is None:
                raise Reject("no_face", f"{item.image}: no face found (MediaPipe FaceLandmarker); expected a "
                                        "visible face")  # fmt: skip
            crop = crop_square(rgb, face_box(face.points, rgb.shape[1], rgb.shape[0], self.cfg.crop_scale), self.size)
            faces = face.num_faces
        row["t_landmarks"] = time.perf_counter() - t
        return Image.fromarray(crop), faces
