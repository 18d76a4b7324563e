"""Which stage-1 semantic encoder a component was trained on.

Stage 2 reads faces through the stage-1 encoder's z_sem, and stage 3 starts from the stage-1 denoiser and
conditions on that z_sem. Components of a retrained stage 1 put faces elsewhere in z_sem, so a bundle of a
new stage 1 with an old stage 2 or 3 loads and runs, and edits and animates the wrong faces. Stage 2 and
stage 3 therefore write ``lineage.json`` beside their weights with a digest of the encoder they used, and
``export_bundle`` refuses to put them beside another one.
"""

from __future__ import annotations

import hashlib
import json

import torch
from safetensors.torch import load

from fet import storage

LINEAGE = "lineage.json"
ENCODER = "semantic_encoder.safetensors"


class LineageError(ValueError):
    """Components trained on different stage-1 semantic encoders."""


def encoder_digest(stage1_dir: str) -> str:
    """sha256 over the stored tensors of ``stage1_dir``'s semantic encoder (names, dtypes, shapes, values),
    so a copy or a re-save of the same weights has the same digest."""
    tensors = load(storage.read_bytes(storage.join(stage1_dir, ENCODER)))
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_lineage(out: str, stage1_dir: str, digest: str) -> None:
    """Record in component directory ``out`` that it was trained on the encoder of ``stage1_dir``."""
    info = {"semantic_encoder_sha256": digest, "stage1": str(stage1_dir)}
    storage.write_text(storage.join(out, LINEAGE), json.dumps(info, indent=2))


def read_lineage(component_dir: str) -> dict | None:
    """What ``write_lineage`` recorded, or None for a component written without it."""
    path = storage.join(component_dir, LINEAGE)
    return json.loads(storage.read_text(path)) if storage.exists(path) else None


def check_lineage(stage1_dir: str, components: dict[str, str]) -> None:
    """Refuse components (stage name → directory) recorded as trained on another encoder than ``stage1_dir``'s.
    A component without ``lineage.json`` (written before it existed) is taken as it is."""
    digest = None
    for stage, directory in components.items():
        info = read_lineage(directory)
        if info is None:
            continue
        digest = digest or encoder_digest(stage1_dir)
        if info.get("semantic_encoder_sha256") != digest:
            raise LineageError(
                f"{directory}: the {stage} component was trained on the stage-1 semantic encoder of "
                f"{info.get('stage1')!r}, not on the one in {stage1_dir} (the weights differ); train {stage} "
                f"again on {stage1_dir}, or export with the stage-1 component it was trained on"
            )
