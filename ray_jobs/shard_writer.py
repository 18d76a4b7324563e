"""The Ray Data step that publishes shards: one batch of rows → one atomic shard.

It lives apart from ``ray_jobs.preprocess`` on purpose: a Ray task imports the module of the function
it runs, and this one needs only ``fet.data.shards`` (a quarter of a second), not torch, MediaPipe and
the audio stack (about three seconds on a busy 2-core machine, paid at the very end of the job).
"""

from __future__ import annotations

import time

import pyarrow as pa

from fet.data import shards


def write_batch(batch: pa.Table, out: str, kind: str) -> dict[str, list]:
    """Write ``batch`` as one shard of ``kind`` under ``out``; returns its summary as a one-row batch."""
    t = time.perf_counter()
    summary = shards.write_shard(out, kind, batch.to_pylist())
    return {k: [v] for k, v in summary.items()} | {"write_seconds": [time.perf_counter() - t]}
