"""Per-clip evaluation records kept beside the evaluation's tables, so that an evaluation run again after it
was stopped (a killed driver, a lost node, a preempted job) generates only the clips it had not finished.

    <out>/clips/settings.json      what decides a clip's record: the settings, the bundle and the shards
    <out>/clips/<digest>.npz       one clip's record: numbers and names, its arrays, its preview PNG

Records made under other settings, with another bundle or from other shards, are deleted before any is
used (``prepare``).
A clip whose evaluation failed keeps no record: the next run tries it again.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np

from fet import storage

# the settings of fet.evaluation.config.EvalConfig that change a clip's record
SETTINGS = ("shards", "max_seconds", "steps", "seed", "edits", "eval_size", "fid_every", "device", "weights")


def record_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of an evaluation config (``to_dict(EvalConfig)``) that decides a clip's record, with digests
    of the bundle's ``bundle.json`` (a re-export of other weights changes its runs and metrics) and of the
    shards' ``manifest.json`` (shards written again at the same place change its timings)."""
    digests = {name: hashlib.sha256(storage.read_bytes(storage.join(cfg[key], name))).hexdigest()
               for key, name in (("bundle", "bundle.json"), ("shards", "manifest.json"))}  # fmt: skip
    return {k: cfg[k] for k in SETTINGS} | digests


class ClipRecords:
    """The records under ``<out>/clips`` made with ``settings`` (``record_settings``)."""

    def __init__(self, out: str, settings: dict[str, Any]) -> None:
        self.root, self.settings = storage.join(out, "clips"), settings

    def _uri(self, clip_id: str) -> str:
        return storage.join(self.root, hashlib.sha256(clip_id.encode()).hexdigest()[:24] + ".npz")

    def prepare(self) -> int:
        """Keep the records made with these settings, delete any made with others → how many are kept.
        Run once, by the driver, before the clips are evaluated."""
        marker = storage.join(self.root, "settings.json")
        try:
            same = json.loads(storage.read_text(marker)) == json.loads(json.dumps(self.settings))
            files = storage.list_files(self.root)
        except storage.NotFoundError:
            same, files = False, []
        records = [f for f in files if f.endswith(".npz")]
        if same:
            return len(records)
        for f in records:
            storage.delete(f)
        storage.write_text(marker, json.dumps(self.settings, indent=1, sort_keys=True))
        return 0

    def get(self, clip_id: str) -> bytes | None:
        """The clip's record from an earlier run (``encode``d), or None."""
        try:
            return storage.read_bytes(self._uri(clip_id))
        except storage.NotFoundError:
            return None

    def put(self, clip_id: str, record: bytes) -> None:
        """Keep one clip's record (``encode``d), written whole (``storage.write_bytes``)."""
        storage.write_bytes(self._uri(clip_id), record)


def encode(record: dict[str, Any]) -> bytes:
    """One clip's record as the bytes of one ``.npz``: numbers, strings and None as JSON, arrays and bytes
    (its preview) as arrays."""
    arrays = {k: v for k, v in record.items() if isinstance(v, np.ndarray)}
    raw = {k: np.frombuffer(v, np.uint8) for k, v in record.items() if isinstance(v, bytes)}
    values = {k: v for k, v in record.items() if k not in arrays and k not in raw}
    head = json.dumps({"values": values, "arrays": sorted(arrays), "bytes": sorted(raw)}, default=_plain).encode()
    buf = io.BytesIO()
    np.savez(buf, __record__=np.frombuffer(head, np.uint8), **arrays, **raw)
    return buf.getvalue()


def decode(data: bytes) -> dict[str, Any]:
    """``encode``'s record back."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        head = json.loads(bytes(z["__record__"]))
        return head["values"] | {k: z[k] for k in head["arrays"]} | {k: bytes(z[k]) for k in head["bytes"]}


def _plain(value: Any) -> Any:
    """A NumPy number as the Python number JSON writes."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a clip record holds a {type(value).__name__}, which it cannot keep")
