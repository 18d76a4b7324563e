"""Checkpoints: one ``<name>.safetensors`` (weights) + ``<name>.json`` (kind and config) per component.

Loading never unpickles anything: weights come from safetensors, configs from JSON, and the module is
rebuilt by our own code from the config. Works on local directories and ``s3://`` prefixes.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from fet import storage

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A missing, mismatched or malformed checkpoint."""


def save_component(directory: str, name: str, module: nn.Module, kind: str, config: dict[str, Any]) -> None:
    """Write ``directory/name.safetensors`` and ``directory/name.json``."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    storage.write_bytes(storage.join(directory, f"{name}.safetensors"), save_safetensors_bytes(state))
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": config,
        "num_parameters": sum(p.numel() for p in module.parameters()),
    }
    storage.write_text(storage.join(directory, f"{name}.json"), json.dumps(meta, indent=2, sort_keys=True))


def read_component_config(directory: str, name: str, kind: str) -> dict[str, Any]:
    """The config stored with a component, after checking it is the expected kind."""
    path = storage.join(directory, f"{name}.json")
    if not storage.exists(path):
        raise CheckpointError(f"{path}: missing; expected the config of the {kind!r} component")
    try:
        meta = json.loads(storage.read_text(path))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON: {e}") from e
    if meta.get("kind") != kind:
        raise CheckpointError(f"{path}: holds a {meta.get('kind')!r} component, expected {kind!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {meta.get('format_version')}, expected {FORMAT_VERSION}")
    return meta["config"]


def load_weights(directory: str, name: str, module: nn.Module) -> nn.Module:
    """Load ``name.safetensors`` into ``module``; every missing/extra/mis-shaped tensor is named."""
    path = storage.join(directory, f"{name}.safetensors")
    if not storage.exists(path):
        raise CheckpointError(f"{path}: missing weights file")
    try:
        state = load_safetensors_bytes(storage.read_bytes(path))
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file: {e}") from e
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{path}: weights do not match the config in {name}.json — "
            f"missing {missing[:3]}{'…' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'…' if len(unexpected) > 3 else ''}, "
            f"shape mismatches {shapes[:3]}"
        )
    with torch.no_grad():
        module.load_state_dict(state, strict=True)
    return module
