"""What a shard folder's rows were made with, so a run never adds rows made another way.

Preprocessing skips the inputs a shard folder already holds. A run into the same ``out`` with another crop
size, frame rate, crop scale, filter or audio encoder would skip those and add only the new inputs, made
its own way: a folder of mixed rows. With no new input it would do nothing and report every input done,
though none was made as asked. So the first run into a folder writes ``settings.json`` beside the shards,
and a later run must ask for the same, except what does not shape a row: the inputs (adding clips to a
folder is how it grows), the shard size and the Ray resources.
"""

from __future__ import annotations

import json
from typing import Any

from fet import storage
from fet.config import ConfigError, flatten, to_dict
from fet.data import shards
from fet.data.preprocess.config import PreprocessConfig

SETTINGS = "settings.json"
FREE = ("sources", "out", "rows_per_shard", "ray")  # may differ from run to run


def row_settings(cfg: PreprocessConfig) -> dict[str, Any]:
    """Every setting that shapes a row, flattened: ``{"size": 64, "audio.kind": "mel", ...}``."""
    return flatten({k: v for k, v in to_dict(cfg).items() if k not in FREE})


def check_settings(cfg: PreprocessConfig) -> None:
    """Record the run's row settings in ``out``, or refuse the run when the shards there were made with
    others, naming each difference."""
    uri, wanted = storage.join(cfg.out, SETTINGS), row_settings(cfg)
    text = json.dumps(wanted, indent=2, sort_keys=True)
    if storage.create_new(uri, text.encode()):
        return
    made = json.loads(storage.read_text(uri))
    changed = sorted(k for k in made.keys() | wanted.keys() if made.get(k) != wanted.get(k))
    if not changed:
        return
    if not any(shards.sidecar_files(cfg.out, kind) for kind in shards.KINDS):  # a run that stopped before any shard
        storage.write_text(uri, text)
        return
    diffs = ", ".join(f"{k} {made.get(k)!r} → {wanted.get(k)!r}" for k in changed)
    raise ConfigError(
        f"out={cfg.out}: holds shards made with other settings ({diffs}); a run adds only inputs it does not "
        "hold yet, so the folder would mix rows made two ways. Write to another out, or delete this one to "
        "make every row again"
    )
