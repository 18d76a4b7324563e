"""A steady face crop through a video: detect every few frames, then smooth the box over time.

Training crops must not jitter: a per-frame box would make the whole image shake with the detector's
noise, and the models would learn that shake. We detect the face on a subsample of frames (MediaPipe
on a downscaled copy), interpolate the box centre between detections, smooth it with a Gaussian of
``smooth_seconds``, and keep one box side (the median) for the whole segment — the framing of the
fixed-box HDTF/VoxCeleb crops, but following slow head motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter1d

from fet.landmarks.align import DEFAULT_SCALE, crop_square, face_box
from fet.landmarks.detector import FaceLandmarkDetector


@dataclass
class FaceTrack:
    boxes: np.ndarray  # (T, 3) x0, y0, side in source pixels
    detected: np.ndarray  # (T,) bool: a face was found at this frame (only sampled frames can be True)
    sampled: np.ndarray  # (T,) bool: detection ran at this frame
    num_faces: int  # most faces seen in one sampled frame

    @property
    def detection_ratio(self) -> float:
        return float(self.detected[self.sampled].mean()) if self.sampled.any() else 0.0

    @property
    def side(self) -> float:
        return float(self.boxes[0, 2])


def downscale(rgb: np.ndarray, long_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if max(h, w) <= long_side:
        return rgb
    k = long_side / max(h, w)
    return np.asarray(Image.fromarray(rgb).resize((max(1, round(w * k)), max(1, round(h * k))), Image.BILINEAR))


def track_face(
    frames: np.ndarray,
    detector: FaceLandmarkDetector,
    every: int = 5,
    scale: float = DEFAULT_SCALE,
    smooth_frames: float = 12.0,
    detection_size: int = 512,
) -> FaceTrack | None:
    """(T, H, W, 3) frames → a smoothed square box per frame, or None when no sampled frame has a face."""
    T, H, W = frames.shape[:3]
    sampled = np.zeros(T, bool)
    sampled[::every] = True
    sampled[-1] = True
    detected = np.zeros(T, bool)
    centres, sides, faces = [], [], 0
    for t in np.flatnonzero(sampled):
        face = detector.detect(downscale(frames[t], detection_size))
        if face is None:
            continue
        faces = max(faces, face.num_faces)
        x0, y0, side = face_box(face.points, W, H, scale)
        detected[t] = True
        centres.append((t, x0 + side / 2, y0 + side / 2))
        sides.append(side)
    if not centres:
        return None
    c = np.asarray(centres)
    ticks = np.arange(T)
    cx = gaussian_filter1d(np.interp(ticks, c[:, 0], c[:, 1]), smooth_frames, mode="nearest")
    cy = gaussian_filter1d(np.interp(ticks, c[:, 0], c[:, 2]), smooth_frames, mode="nearest")
    side = float(np.median(sides))
    boxes = np.stack([cx - side / 2, cy - side / 2, np.full(T, side)], axis=1)
    return FaceTrack(boxes, detected, sampled, faces)


def crop_track(frames: np.ndarray, track: FaceTrack, size: int) -> np.ndarray:
    """Cut each frame's box → (T, size, size, 3) uint8."""
    return np.stack([crop_square(f, tuple(b), size) for f, b in zip(frames, track.boxes)])
