"""A face's own mesh in its head frame, and its landmarks under new expressions and poses.

MediaPipe gives 2-D landmarks and a rigid head transform, not metric 3-D points. Lifting each landmark
along its camera ray to the depth the canonical mesh has there (under the same transform) gives a mesh
whose projection reproduces the detected landmarks exactly, in head-frame centimetres — the
"canonical (pose-free) mesh" of the paper (3.4) for this face. Audio2Mesh moves its 468 vertices; the
iris points follow their eye rigidly.

    head_mesh(face)                   → (478, 3) cm, pose-free
    animate(mesh, offsets, poses, T0) → (T, 478, 2) landmarks in [0, 1] image coordinates
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from fet.landmarks.face_mesh import LEFT_IRIS, NUM_MESH_VERTICES, RIGHT_IRIS, contours, load_canonical_mesh
from fet.landmarks.projection import matrix_to_pose, pose_to_matrix, project, unproject


@functools.lru_cache(maxsize=1)
def _eye_vertices() -> tuple[list[int], list[int]]:
    c = contours()
    return sorted({v for loop in c["right_eye"] for v in loop}), sorted({v for loop in c["left_eye"] for v in loop})


def head_mesh(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Normalised landmarks (478, 3) + head transform (4, 4) → (478, 3) head-frame points in cm."""
    canonical = load_canonical_mesh().vertices.astype(np.float64)
    depth = project(canonical, transform, 1.0)[:, 2]  # (468,) camera depth of each canonical vertex
    right, left = _eye_vertices()
    iris_depth = np.concatenate([np.full(5, depth[right].mean()), np.full(5, depth[left].mean())])
    depth = np.concatenate([depth, iris_depth])  # RIGHT_IRIS then LEFT_IRIS, MediaPipe's order
    assert RIGHT_IRIS[0] == NUM_MESH_VERTICES and LEFT_IRIS[0] == NUM_MESH_VERTICES + 5
    return unproject(points[:, :2].astype(np.float64), depth, transform, 1.0)


def relative_pose(transforms: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Head motion of each frame in the reference head's frame: D_t = T_ref⁻¹ · T_t → (T, 6) pose."""
    inv = np.linalg.inv(reference)
    return np.stack([matrix_to_pose(inv @ t, 0.0) for t in transforms])


def animate(
    mesh: np.ndarray, offsets: np.ndarray | torch.Tensor, poses: np.ndarray | torch.Tensor, transform: np.ndarray
) -> np.ndarray:
    """Reference mesh (478, 3) + vertex offsets (T, 468, 3) + relative poses (T, 6) → (T, 478, 2) in [0, 1].

    Frame t's transform is T_ref · D(pose_t); the iris points move with the mean offset of their eye.
    """
    offsets, poses = np.asarray(offsets, np.float64), np.asarray(poses, np.float64)
    if offsets.ndim != 3 or offsets.shape[1:] != (NUM_MESH_VERTICES, 3):
        raise ValueError(f"offsets: expected (T, {NUM_MESH_VERTICES}, 3), got {offsets.shape}")
    if poses.shape != (offsets.shape[0], 6):
        raise ValueError(f"poses: expected ({offsets.shape[0]}, 6), got {poses.shape}")
    right, left = _eye_vertices()
    iris = np.concatenate(
        [
            np.repeat(offsets[:, right].mean(1, keepdims=True), 5, 1),
            np.repeat(offsets[:, left].mean(1, keepdims=True), 5, 1),
        ],
        axis=1,
    )  # (T, 10, 3)
    frames = mesh[None] + np.concatenate([offsets, iris], axis=1)  # (T, 478, 3)
    out = np.empty((*frames.shape[:2], 2), np.float32)
    for t in range(frames.shape[0]):
        out[t] = project(frames[t], transform @ pose_to_matrix(poses[t], 0.0), 1.0)[:, :2]
    return out
