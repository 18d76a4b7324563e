"""Head pose and perspective projection of face meshes (AniPortrait's path; MediaPipe's camera).

Pose is 6-d: (pitch, yaw, roll) in radians and (tx, ty, tz) in cm. The head frame is MediaPipe's
canonical one (x to the subject's left, y up, z out of the face); the camera sits at the origin
looking down −z with a 63° vertical field of view, and the head centre rests at z = −``distance``.
"""

from __future__ import annotations

import numpy as np

FOV_DEGREES = 63.0


def rotation_matrix(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """R = R_z(roll) · R_y(yaw) · R_x(pitch), (3, 3)."""
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def pose_to_matrix(pose: np.ndarray, distance: float) -> np.ndarray:
    """6-d pose → 4×4 head-to-camera transform (MediaPipe's facial transformation matrix layout)."""
    m = np.eye(4)
    m[:3, :3] = rotation_matrix(*pose[:3])
    m[:3, 3] = [pose[3], pose[4], pose[5] - distance]
    return m


def matrix_to_pose(m: np.ndarray, distance: float) -> np.ndarray:
    """Inverse of ``pose_to_matrix`` for rotations with |pitch| < 90°."""
    r = m[:3, :3]
    yaw = np.arcsin(np.clip(-r[2, 0], -1, 1))
    pitch = np.arctan2(r[2, 1], r[2, 2])
    roll = np.arctan2(r[1, 0], r[0, 0])
    return np.array([pitch, yaw, roll, m[0, 3], m[1, 3], m[2, 3] + distance])


def focal_length(size: int, fov_degrees: float = FOV_DEGREES) -> float:
    """Focal length in pixels for a square image of ``size`` pixels."""
    return (size / 2) / np.tan(np.radians(fov_degrees) / 2)


def project(points: np.ndarray, transform: np.ndarray, size: int, fov_degrees: float = FOV_DEGREES) -> np.ndarray:
    """Head-frame points (N, 3) in cm → (N, 3): pixel x, pixel y (y down), camera depth (cm, > 0)."""
    cam = points @ transform[:3, :3].T + transform[:3, 3]  # (N, 3) camera frame
    depth = -cam[:, 2]
    f = focal_length(size, fov_degrees)
    x = size / 2 + f * cam[:, 0] / depth
    y = size / 2 - f * cam[:, 1] / depth
    return np.stack([x, y, depth], axis=1)


def normalized_landmarks(projected: np.ndarray, size: int, fov_degrees: float = FOV_DEGREES) -> np.ndarray:
    """Projected points → MediaPipe's landmark convention: x, y in [0, 1] of the image, z relative depth
    in the same scale as x (negative towards the camera, zero at the mean depth)."""
    f = focal_length(size, fov_degrees)
    z = (projected[:, 2] - projected[:, 2].mean()) * f / projected[:, 2].mean() / size
    return np.stack([projected[:, 0] / size, projected[:, 1] / size, z], axis=1).astype(np.float32)


def unproject(pixels: np.ndarray, depth: np.ndarray, transform: np.ndarray, size: float) -> np.ndarray:
    """Inverse of ``project``: pixel x, y (N, 2) at camera depths (N,) → head-frame points (N, 3), cm."""
    f = focal_length(size)
    cam = np.stack(
        [(pixels[:, 0] - size / 2) * depth / f, -(pixels[:, 1] - size / 2) * depth / f, -depth], axis=1
    )  # (N, 3) camera frame
    return (cam - transform[:3, 3]) @ transform[:3, :3]  # R^T (cam - t), row-vector form
