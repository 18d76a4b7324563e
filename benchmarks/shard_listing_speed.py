"""Listing published shards: how long a driver takes to read every shard's sidecar, one request at a time
against ``storage.each``'s concurrent reads (what ``fet.data.shards`` does since they were added).

.venv/bin/python benchmarks/shard_listing_speed.py --root s3://my-bucket/bench-listing --shards 2000

``--root`` is a scratch prefix or folder: the script writes ``--shards`` sidecars of about 1 KB under it
(``<root>/clips/part-*.json``, as a shard of 8 clips has; no Parquet), times the reads, and deletes what it
wrote.
"""

from __future__ import annotations

import argparse
import json
import time

from fet import storage
from fet.data.shards import read_sidecars, sidecar_files


def _sidecar(i: int) -> str:
    items = {f"clips/speaker{i:05d}/video{j}.mp4": 1 for j in range(8)}
    return json.dumps({
        "shard": f"part-{i:06d}.parquet", "items": items, "splits": {"train": 8},
        "segments": {k: [f"{k}#0"] for k in items}, "rejects": [],
        "timings": {f"t_{n}": 1.0 for n in ("decode", "detect", "landmarks", "audio", "write")},
    })  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="a scratch folder or s3:// prefix (written, then deleted)")
    p.add_argument("--shards", type=int, default=2000)
    args = p.parse_args()
    uris = [storage.join(args.root, "clips", f"part-{i:06d}.json") for i in range(args.shards)]
    storage.each(lambda u: storage.write_text(u, _sidecar(int(u[-11:-5]))), uris)
    try:
        t = time.perf_counter()
        files = sidecar_files(args.root, "clips")
        listing = time.perf_counter() - t
        t = time.perf_counter()
        one_at_a_time = [json.loads(storage.read_text(f)) for f in files]
        serial = time.perf_counter() - t
        t = time.perf_counter()
        concurrent = read_sidecars(args.root, "clips")
        threaded = time.perf_counter() - t
        assert concurrent == one_at_a_time
    finally:
        storage.each(storage.delete, uris)
    print(json.dumps({
        "root": args.root, "sidecars": len(files), "sidecar_bytes": len(_sidecar(0)),
        "listing_s": round(listing, 2), "read_one_at_a_time_s": round(serial, 2),
        f"read_{storage.READ_THREADS}_at_a_time_s": round(threaded, 2), "speedup": round(serial / threaded, 1),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
