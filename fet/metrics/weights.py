"""Where evaluation networks' weights come from, and the error when they are not there."""

from __future__ import annotations

import os

import torch
from torch import nn


class MissingWeightsError(FileNotFoundError):
    """A metric's network weights are not at the path given; the message says which file and where it comes from."""


def require_weights(path: str | os.PathLike | None, what: str, source: str, option: str) -> str:
    """``path`` as a string if it is an existing file, else MissingWeightsError naming the file and its source."""
    if not path:
        raise MissingWeightsError(f"{what}: no weights path given; set {option} to {source}")
    if not os.path.isfile(path):
        raise MissingWeightsError(f"{what}: weights file {os.fspath(path)!r} does not exist; expected {source}")
    return os.fspath(path)


def load_state_dict_file(
    model: nn.Module, path: str | os.PathLike | None, what: str, source: str, option: str, device: str | torch.device
) -> nn.Module:
    """``model`` with every weight from the state-dict file at ``path``, frozen, in eval mode, on ``device``.
    MissingWeightsError when the file is absent; ValueError when its keys or shapes do not match."""
    file = require_weights(path, what, source, option)
    state = torch.load(file, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{file}: not the {what} state dict ({source}): {e}") from e
    return model.eval().requires_grad_(False).to(device)
