"""Whether a model's weights file is whole, from a few small reads: a check a job's driver makes before many
workers each load the weights (and each fail with a traceback), which on S3 costs two requests, not a
download of gigabytes.

- safetensors: an 8-byte little-endian header length, a JSON header whose tensors' ``data_offsets`` cover
  the data that follows it, and nothing after; a file cut short (an interrupted download or copy) is
  shorter than the header says.
- a PyTorch zip archive (``torch.save``): a zip whose end-of-central-directory record closes the file.
- an older pickled PyTorch file carries nothing to check it against; it passes.
"""

from __future__ import annotations

import json
import os

from fet import storage

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors library refuses larger headers
ZIP_END_RECORD = b"PK\x05\x06"
ZIP_TAIL = 22 + 65535  # the end record and the longest comment a zip may carry after it


def check_weights_file(uri: str | os.PathLike) -> None:
    """``ValueError`` naming ``uri`` unless it is a whole weights file; ``NotFoundError`` when it is absent."""
    uri = str(uri)
    size = storage.size(uri)
    if size == 0:
        raise ValueError(f"{uri}: empty; expected model weights")
    if uri.endswith(".safetensors"):
        _check_safetensors(uri, size)
    elif storage.read_range(uri, 0, 4) == b"PK\x03\x04":
        tail = storage.read_range(uri, max(0, size - ZIP_TAIL), ZIP_TAIL)
        if ZIP_END_RECORD not in tail:
            raise ValueError(f"{uri}: cut short ({size} bytes): a PyTorch zip archive without its end record; "
                             "copy or download it again")  # fmt: skip


def _check_safetensors(uri: str, size: int) -> None:
    head = storage.read_range(uri, 0, 8)
    n = int.from_bytes(head, "little") if len(head) == 8 else -1
    if not 0 < n <= MAX_SAFETENSORS_HEADER:
        raise ValueError(f"{uri}: not a safetensors file (no header length in its first 8 bytes)")
    if 8 + n > size:
        raise ValueError(f"{uri}: cut short: {size} bytes, and its header alone takes {8 + n}; copy or "
                         "download it again")  # fmt: skip
    try:
        header = json.loads(storage.read_range(uri, 8, n))
        ends = [int(t["data_offsets"][1]) for name, t in header.items() if name != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise ValueError(f"{uri}: not a safetensors file (its header is no JSON table of tensors: {e})") from e
    expected = 8 + n + max(ends, default=0)
    if size < expected:
        raise ValueError(f"{uri}: cut short: {size} of the {expected} bytes its header describes; copy or "
                         "download it again")  # fmt: skip
    if size > expected:
        raise ValueError(f"{uri}: {size - expected} bytes after the tensors its header describes; not a "
                         "safetensors file as written, or two files run together")  # fmt: skip


def load_failure_reason(error: Exception) -> str:
    """What a loader (``torch.load``, ``from_pretrained``, safetensors) found wrong with a weights file, in one
    line. ``torch.load``'s own message leads with advice to load the file with ``weights_only=False``, which
    runs whatever code the file holds: never for a file one was handed. A loader that wraps the error it met
    ("Unable to load weights from checkpoint file …") is read for that error, which says why."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    return line.split(". ")[0].rstrip(".") or f"{type(error).__name__} (an empty or cut-short file)"
