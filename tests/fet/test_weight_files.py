"""A weights file is checked whole from its header and its size, on disk and on S3 (ranged reads), before
workers load it: a file cut short, run together with another, or of another format is named with why."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save as safetensors_bytes

from fet import storage
from fet.weight_files import check_weights_file


@pytest.fixture(params=["disk", "s3"])
def where(request, tmp_path) -> str:
    return request.getfixturevalue("s3_bucket") if request.param == "s3" else str(tmp_path)


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"conv.weight": torch.randn(16, 8, 3), "conv.bias": torch.randn(16), "step": torch.tensor(3)}


def _torch_zip(state: dict[str, torch.Tensor], tmp_path) -> bytes:
    torch.save(state, tmp_path / "w.bin")
    return (tmp_path / "w.bin").read_bytes()


def test_whole_files_pass_and_cut_or_foreign_ones_are_named_with_why(where, tmp_path):
    whole = safetensors_bytes(_state())
    files = {"model.safetensors": whole, "pytorch_model.bin": _torch_zip(_state(), tmp_path),
             "old.bin": pickle.dumps({"w": [1.0, 2.0]}, protocol=2)}  # fmt: skip
    for name, data in files.items():
        storage.write_bytes(storage.join(where, name), data)
        check_weights_file(storage.join(where, name))  # whole: no error
    bad = {
        "cut.safetensors": (whole[: len(whole) - 100], f"cut short: {len(whole) - 100} of the {len(whole)} bytes"),
        "header_only.safetensors": (whole[:20], "cut short: 20 bytes, and its header alone takes"),
        "joined.safetensors": (whole + whole[:64], "64 bytes after the tensors its header describes"),
        "text.safetensors": (b"this is a text file, not weights", "not a safetensors file (no header length"),
        "table.safetensors": (len(b'{"a": 1}').to_bytes(8, "little") + b'{"a": 1}', "its header is no JSON table"),
        "cut.bin": (files["pytorch_model.bin"][:-30], "a PyTorch zip archive without its end record"),
        "empty.safetensors": (b"", "empty; expected model weights"),
    }  # fmt: skip
    for name, (data, why) in bad.items():
        uri = storage.join(where, name)
        storage.write_bytes(uri, data)
        with pytest.raises(ValueError, match="^" + uri.replace(".", r"\.") + ": ") as e:
            check_weights_file(uri)
        assert why in str(e.value), (name, str(e.value))
    with pytest.raises(storage.NotFoundError):
        check_weights_file(storage.join(where, "absent.safetensors"))


def test_ranged_reads_and_sizes(where):
    uri = storage.join(where, "ten.bin")
    storage.write_bytes(uri, bytes(range(10)))
    assert storage.size(uri) == 10
    assert storage.read_range(uri, 2, 3) == bytes([2, 3, 4])
    assert storage.read_range(uri, 8, 5) == bytes([8, 9])  # the file ends first
    assert storage.read_range(uri, 10, 4) == b"" and storage.read_range(uri, 3, 0) == b""
    for missing in (lambda u: storage.size(u), lambda u: storage.read_range(u, 0, 4)):
        with pytest.raises(storage.NotFoundError):
            missing(storage.join(where, "none.bin"))
