"""A device name from a user (``--device``, Serve's ``device`` option) → a ``torch.device`` this process can use.

Checked before any weights load, so a machine without the device is told so by name, not by an assertion
from inside torch after the bundle has been read.
"""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device name that is not one, or a device this process cannot see."""


def resolve_device(spec: str | torch.device) -> torch.device:
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"device {spec!r}: not a device name; expected cpu, cuda or cuda:N") from e
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            built = "a CUDA build" if torch.backends.cuda.is_built() else "a CPU-only build"
            raise DeviceError(f"device {spec!r}: this process sees no CUDA device (torch {torch.__version__}, {built})")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {spec!r}: this process sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {spec!r}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {spec!r}: expected cpu, cuda, cuda:N or mps")
    return device
