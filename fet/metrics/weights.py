"""Where evaluation networks' weights come from, and the error when they are not there."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

from fet import storage
from fet.weight_files import load_failure_reason


class MissingWeightsError(FileNotFoundError):
    """A metric's network weights are not at the path given; the message says which file and where it comes from."""


def weights_exist(path: str | os.PathLike) -> bool:
    return storage.exists(path) if storage.is_s3(path) else os.path.isfile(path)


@contextlib.contextmanager
def local_weights(path: str | os.PathLike | None, what: str, source: str, option: str) -> Iterator[str]:
    """The weights file at ``path`` as a local path for the length of a ``with`` block (a copy of an
    ``s3://`` object, removed at its end: ``storage.local_copy``), else MissingWeightsError naming the file and
    its source."""
    if not path:
        raise MissingWeightsError(f"{what}: no weights path given; set {option} to {source}")
    if not weights_exist(path):
        raise MissingWeightsError(f"{what}: weights file {os.fspath(path)!r} does not exist; expected {source}")
    with storage.local_copy(path) as local:
        yield os.fspath(local)


def load_state_dict_file(
    model: nn.Module, path: str | os.PathLike | None, what: str, source: str, option: str, device: str | torch.device
) -> nn.Module:
    """``model`` with every weight from the state-dict file at ``path``, frozen, in eval mode, on ``device``.
    MissingWeightsError when the file is absent; ValueError when it is no PyTorch weights file (or holds more
    than tensors) or its keys or shapes do not match."""
    with local_weights(path, what, source, option) as file:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{os.fspath(path)}: not a PyTorch weights file of {what} ({source}): "
                             f"{load_failure_reason(e)}") from e  # fmt: skip
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{os.fspath(path)}: not the {what} state dict ({source}): {e}") from e
    return model.eval().requires_grad_(False).to(device)
