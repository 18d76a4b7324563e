"""MediaPipe FaceLandmarker (Tasks API) on images and video frames.

One detection = 478 normalised landmarks (x, y in [0, 1] of the image, z relative depth in x's scale),
the 4×4 facial transformation matrix (canonical head frame → MediaPipe's camera, cm) and 52 ARKit-style
blendshape scores. With several faces in view the largest is returned and the count reported; with
none, ``NoFaceError`` — a face is never guessed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from fet.landmarks.face_mesh import NUM_LANDMARKS, face_landmarker_bytes
from fet.landmarks.projection import matrix_to_pose
from fet.landmarks.task_closing import close_deferred, close_with

NUM_BLENDSHAPES = 52


class NoFaceError(ValueError):
    """No face was found where one was required."""


@dataclass
class FaceLandmarks:
    points: np.ndarray  # (478, 3) float32 normalised landmarks
    transform: np.ndarray  # (4, 4) float64 head → camera
    blendshapes: np.ndarray  # (52,) float32
    num_faces: int = 1  # faces MediaPipe saw; the largest is this one

    @property
    def pose(self) -> np.ndarray:
        """(pitch, yaw, roll, tx, ty, tz): radians and cm in MediaPipe's camera frame."""
        return matrix_to_pose(self.transform, 0.0)

    def pixels(self, width: int, height: int | None = None) -> np.ndarray:
        """(478, 2) pixel coordinates in an image of the given size."""
        return self.points[:, :2] * np.array([width, height or width], np.float32)


class FaceLandmarkDetector:
    """Wraps one MediaPipe FaceLandmarker; create once per process/actor (loading costs ~50 ms)."""

    def __init__(
        self, model: str | os.PathLike | bytes | None = None, max_faces: int = 4, min_confidence: float = 0.5
    ) -> None:
        """``model``: the ``face_landmarker.task`` file (a path or ``s3://`` URI; None: the packaged one) or its
        contents, which is how a bundle holds it. The model is held in memory: no local copy to clean up."""
        from mediapipe.tasks.python import BaseOptions
        from mediapipe.tasks.python.vision import FaceLandmarker, FaceLandmarkerOptions, RunningMode

        self._options = dict(
            base_options=BaseOptions(
                model_asset_buffer=model if isinstance(model, bytes) else face_landmarker_bytes(model)
            ),
            num_faces=max_faces,
            min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        close_deferred()  # of detectors freed by a collection since the last one was made or closed
        self._image = FaceLandmarker.create_from_options(
            FaceLandmarkerOptions(running_mode=RunningMode.IMAGE, **self._options)
        )
        self._video_mode = (FaceLandmarker, FaceLandmarkerOptions, RunningMode.VIDEO)
        self._finalizer = close_with(self, self._image)  # when this detector goes, or at exit, safely

    def close(self) -> None:
        self._finalizer()
        close_deferred()

    def __enter__(self) -> FaceLandmarkDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _mp_image(rgb: np.ndarray):
        import mediapipe as mp

        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"image: expected (H, W, 3) uint8 RGB, got {rgb.dtype} {rgb.shape}")
        return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))

    @staticmethod
    def _largest(result, width: int, height: int) -> FaceLandmarks | None:
        if not result.face_landmarks:
            return None
        faces = [np.array([[p.x, p.y, p.z] for p in f], np.float32) for f in result.face_landmarks]
        areas = [np.ptp(f[:, 0]) * width * np.ptp(f[:, 1]) * height for f in faces]
        i = int(np.argmax(areas))
        if faces[i].shape[0] != NUM_LANDMARKS:
            raise RuntimeError(f"FaceLandmarker returned {faces[i].shape[0]} points, expected {NUM_LANDMARKS}")
        transform = np.asarray(result.facial_transformation_matrixes[i], np.float64).reshape(4, 4)
        blend = np.array([c.score for c in result.face_blendshapes[i]], np.float32)
        return FaceLandmarks(faces[i], transform, blend, num_faces=len(faces))

    def detect(self, rgb: np.ndarray) -> FaceLandmarks | None:
        """One RGB image (H, W, 3) uint8 → the largest face, or None when there is none."""
        return self._largest(self._image.detect(self._mp_image(rgb)), rgb.shape[1], rgb.shape[0])

    def require(self, rgb: np.ndarray, name: str = "image") -> FaceLandmarks:
        """Like ``detect`` but a missing face is an error naming the input."""
        face = self.detect(rgb)
        if face is None:
            raise NoFaceError(f"{name}: no face found (MediaPipe FaceLandmarker); expected a visible face")
        return face

    def detect_video(self, frames: np.ndarray | list[np.ndarray], fps: float = 25.0) -> list[FaceLandmarks | None]:
        """Frames of one video (T, H, W, 3) → one detection (or None) per frame, with MediaPipe's
        tracking across frames (VIDEO mode: steadier than independent detections)."""
        landmarker_cls, options_cls, mode = self._video_mode
        out: list[FaceLandmarks | None] = []
        with landmarker_cls.create_from_options(options_cls(running_mode=mode, **self._options)) as lm:
            for i, rgb in enumerate(frames):
                result = lm.detect_for_video(self._mp_image(rgb), round(i * 1000 / fps))
                out.append(self._largest(result, rgb.shape[1], rgb.shape[0]))
        return out
