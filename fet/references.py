"""Encoded references as bytes: an inverted face (``pipeline.Reference``) saved once and reused.

The inversion is the expensive part of editing and animating a face, so a service keeps each encoded
reference under an id and any replica can load it again. The format is one safetensors blob: every
tensor of the reference plus its landmarks, transform and head mesh, with the notes in the metadata.
Nothing is unpickled on load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import torch
from safetensors.torch import load, save

from fet.landmarks.detector import FaceLandmarks
from fet.pipeline import FaceEditTalkerPipeline, Reference


def inversion_fingerprint(pipeline: FaceEditTalkerPipeline) -> str:
    """A digest of all an encoded reference depends on: the weights that find, align and invert a face
    (face landmarker, semantic encoder, denoiser with its PoseGuider, codec) and the pipeline's settings.
    A bundle replaced at the same path, or inverting with other settings, gives another fingerprint."""
    digest, b = hashlib.sha256(), pipeline.bundle
    for name, module in (("semantic_encoder", b.semantic_encoder), ("talker", b.talker), ("codec", b.codec)):
        for key, tensor in module.state_dict().items():
            digest.update(f"{name}.{key}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(b.face_landmarker)
    digest.update(json.dumps(dataclasses.asdict(pipeline.cfg), sort_keys=True).encode())
    return digest.hexdigest()


def reference_id(fingerprint: str, image: bytes) -> str:
    """The id under which a service keeps the reference of ``image`` (its bytes) encoded by the pipeline
    with that ``inversion_fingerprint``."""
    return hashlib.sha256(fingerprint.encode() + b"\0" + image).hexdigest()[:32]


def reference_to_bytes(ref: Reference) -> bytes:
    tensors = {
        "image": ref.image, "reference_map": ref.reference_map, "z_sem": ref.z_sem, "x_T": ref.x_T,
        "points": torch.from_numpy(np.asarray(ref.landmarks.points, np.float32)),
        "transform": torch.from_numpy(np.asarray(ref.landmarks.transform, np.float64)),
        "blendshapes": torch.from_numpy(np.asarray(ref.landmarks.blendshapes, np.float32)),
        "mesh": torch.from_numpy(np.asarray(ref.mesh, np.float32)),
    }  # fmt: skip
    tensors |= {f"reference_features.{i}": f for i, f in enumerate(ref.reference_features)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"notes": json.dumps(ref.notes), "num_faces": str(ref.landmarks.num_faces),
            "features": str(len(ref.reference_features))}  # fmt: skip
    return save(tensors, metadata=meta)


def reference_from_bytes(data: bytes, device: str | torch.device = "cpu") -> Reference:
    t = load(data)
    meta = _metadata(data)
    n = int(meta["features"])
    landmarks = FaceLandmarks(t["points"].numpy(), t["transform"].numpy(), t["blendshapes"].numpy(),
                              int(meta["num_faces"]))  # fmt: skip
    return Reference(
        image=t["image"].to(device),
        landmarks=landmarks,
        mesh=t["mesh"].numpy(),
        reference_map=t["reference_map"].to(device),
        reference_features=[t[f"reference_features.{i}"].to(device) for i in range(n)],
        z_sem=t["z_sem"].to(device),
        x_T=t["x_T"].to(device),
        notes=json.loads(meta["notes"]),
    )


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (its JSON header)."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]).get("__metadata__", {})
