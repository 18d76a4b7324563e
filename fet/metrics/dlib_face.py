"""dlib's face detector, 68-point shape predictor and 128-d face-recognition ResNet, for evaluation.

The weights are the files of the ``face_recognition_models`` package (PyPI, CC0):
``shape_predictor_68_face_landmarks.dat`` (iBUG 300-W markup, the 68 points M-LMD/F-LMD are defined on)
and ``dlib_face_recognition_resnet_model_v1.dat`` (the 128-d embedding, 99.38 % on LFW). They are found
in that package without importing it, or in any directory given as ``models_dir``.

dlib's HOG detector needs faces of roughly 80 px or more, so frames smaller than ``min_size`` are
upscaled (bicubic) before detection; landmarks are returned in the pixel coordinates of the frame as
given.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fet.metrics.weights import local_weights

SHAPE_PREDICTOR = "shape_predictor_68_face_landmarks.dat"
RECOGNITION_NET = "dlib_face_recognition_resnet_model_v1.dat"
PACKAGE_SOURCE = "the file from the face_recognition_models package (pip install face_recognition_models)"


def default_models_dir() -> str | None:
    """The ``models/`` folder of an installed ``face_recognition_models`` (its ``__init__`` needs
    pkg_resources, so it is located, not imported)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(next(iter(spec.submodule_search_locations)), "models")


@dataclass
class FaceTrack:
    """Per-frame results of one video; NaN rows where dlib found no face."""

    landmarks: np.ndarray  # (T, 68, 2) pixels
    embeddings: np.ndarray  # (T, 128)
    boxes: np.ndarray  # (T, 4) x0, y0, x1, y1 of the detection, pixels

    @property
    def found(self) -> np.ndarray:
        return np.isfinite(self.embeddings).all(1)


class DlibFace:
    """Create once per process (loading takes ~1 s); not thread-safe."""

    def __init__(self, models_dir: str | os.PathLike | None = None, min_size: int = 256) -> None:
        import dlib

        folder = os.fspath(models_dir) if models_dir else default_models_dir() or ""
        self.detector = dlib.get_frontal_face_detector()
        files = [os.path.join(folder, f) for f in (SHAPE_PREDICTOR, RECOGNITION_NET)]
        with (
            local_weights(files[0], "dlib face models", PACKAGE_SOURCE, "models_dir") as predictor,
            local_weights(files[1], "dlib face models", PACKAGE_SOURCE, "models_dir") as recognizer,
        ):
            self.predictor = dlib.shape_predictor(predictor)
            self.recognizer = dlib.face_recognition_model_v1(recognizer)
        self.min_size = min_size

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"dlib face: expected an (H, W, 3) RGB image, got shape {image.shape}")
        side = min(image.shape[:2])
        if side >= self.min_size:
            return image, 1.0
        scale = self.min_size / side
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC)), scale

    def _find(self, image: np.ndarray):
        """(upscaled image, scale, the largest face's 68-point shape or None)."""
        big, scale = self._prepare(image)
        faces = self.detector(big, 1)
        if len(faces) == 0:
            return big, scale, None
        return big, scale, self.predictor(big, max(faces, key=lambda r: r.area()))

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """(68, 2) pixel coordinates of the largest face in an RGB frame, or None without a face."""
        _, scale, shape = self._find(image)
        return None if shape is None else np.array([(p.x, p.y) for p in shape.parts()], np.float64) / scale

    def embedding(self, image: np.ndarray) -> np.ndarray | None:
        """(128,) identity embedding of the largest face, or None without a face."""
        big, _, shape = self._find(image)
        return None if shape is None else np.asarray(self.recognizer.compute_face_descriptor(big, shape), np.float64)

    def analyse(self, frames: np.ndarray) -> FaceTrack:
        """(T, H, W, 3) frames → landmarks, embeddings and boxes, NaN rows where no face is found; one
        detection per frame serves all three."""
        t = len(frames)
        track = FaceTrack(np.full((t, 68, 2), np.nan), np.full((t, 128), np.nan), np.full((t, 4), np.nan))
        for i, frame in enumerate(frames):
            big, scale, shape = self._find(frame)
            if shape is not None:
                track.landmarks[i] = np.array([(p.x, p.y) for p in shape.parts()], np.float64) / scale
                track.embeddings[i] = np.asarray(self.recognizer.compute_face_descriptor(big, shape), np.float64)
                r = shape.rect
                track.boxes[i] = np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64) / scale
        return track
