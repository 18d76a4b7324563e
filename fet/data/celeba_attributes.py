"""Reader and writer for CelebA-HQ attribute files (``CelebAMask-HQ-attribute-anno.txt``).

Format: line 1 = number of images, line 2 = the 40 attribute names, then ``<file> v1 … v40`` with
values 1 / -1. We read them into our shard convention: int8 1 (present), 0 (absent), -1 (unknown).
A 0 in a file means "unknown" (an extension used by data sets that do not model every attribute,
e.g. SynthTalk); the original CelebA-HQ file never contains it.
"""

from __future__ import annotations

import numpy as np

from fet import storage
from fet.editing.attributes import CELEBA_ATTRIBUTES


class AnnotationError(ValueError):
    """A malformed attribute file."""


def parse_celeba_attributes(text: str, source: str = "<text>") -> dict[str, np.ndarray]:
    """File contents → {image file name: int8[40] in CelebA order (1, 0, -1 unknown)}."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        raise AnnotationError(f"{source}: expected a count line and a header line, got {len(lines)} lines")
    try:
        count = int(lines[0].strip())
    except ValueError as e:
        raise AnnotationError(f"{source}: line 1 should be the number of images, got {lines[0]!r}") from e
    names = lines[1].split()
    if names != list(CELEBA_ATTRIBUTES):
        missing = sorted(set(CELEBA_ATTRIBUTES) - set(names))
        raise AnnotationError(
            f"{source}: line 2 should list the 40 CelebA attributes in order; "
            f"got {len(names)} names (missing: {missing[:5]})"
        )
    out: dict[str, np.ndarray] = {}
    mapping = {1: 1, -1: 0, 0: -1}
    for lineno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if len(parts) != 41:
            raise AnnotationError(f"{source}:{lineno}: expected a file name and 40 values, got {len(parts)} fields")
        try:
            values = [mapping[int(v)] for v in parts[1:]]
        except (ValueError, KeyError) as e:
            raise AnnotationError(f"{source}:{lineno}: values must be 1, -1 (or 0 for unknown): {line!r}") from e
        out[parts[0]] = np.asarray(values, dtype=np.int8)
    if len(out) != count:
        raise AnnotationError(f"{source}: header says {count} images, found {len(out)} rows")
    return out


def read_celeba_attributes(uri: str) -> dict[str, np.ndarray]:
    """Read an attribute file from a local path or ``s3://`` URI."""
    return parse_celeba_attributes(storage.read_text(uri), source=uri)


def format_celeba_attributes(labels: dict[str, np.ndarray]) -> str:
    """{file: int8[40] (1/0/-1)} → file text in the CelebA-HQ format (unknown written as 0)."""
    inverse = {1: "1", 0: "-1", -1: "0"}
    rows = [str(len(labels)), " ".join(CELEBA_ATTRIBUTES)]
    for name, values in labels.items():
        if len(values) != 40:
            raise AnnotationError(f"{name}: expected 40 attribute values, got {len(values)}")
        rows.append(name + "  " + " ".join(inverse[int(v)] for v in values))
    return "\n".join(rows) + "\n"
