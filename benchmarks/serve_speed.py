"""Serve benchmark: requests/s and p50/p95 latency of /v1/edit, and seconds of wall time per second of
generated video on /v1/generate, at 1 and 4 concurrent clients, over real HTTP on a local Ray.

    python benchmarks/serve_speed.py                          # a random tiny bundle (CPU), 16 px
    python benchmarks/serve_speed.py --bundle outputs/bundle  # a trained bundle

Edits reuse one encoded reference (the inversion is measured separately as "encode"), so the edit
numbers are the renderer's; generation includes landmarks, rendering and mp4 encoding.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def wav(seconds: float, sr: int = 16000) -> bytes:
    """Speech-like audio: a 140 Hz buzz with syllable-rate amplitude modulation, as WAV."""
    from fet.audio.load import wav_bytes

    t = np.arange(int(seconds * sr)) / sr
    return wav_bytes(0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) * np.sign(np.sin(2 * np.pi * 140 * t)), sr)


def timed(fn, n: int, clients: int) -> tuple[float, list[float]]:
    def one(_):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        lat = list(pool.map(one, range(n)))
    return time.perf_counter() - start, lat


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=None, help="bundle directory (default: a random tiny one)")
    p.add_argument("--image", default=str(ROOT.parent / "shared/media/image/sadtalker_people_0.png"))
    p.add_argument("--edits", type=int, default=40)
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()

    import ray
    from ray import serve

    with tempfile.TemporaryDirectory() as tmp:  # the random bundle and the service's state go with it
        ray.init(include_dashboard=False, log_to_driver=False)
        try:
            results = measure(args, Path(tmp))
        finally:
            serve.shutdown()
            ray.shutdown()
    print(json.dumps(results, indent=2))


def measure(args: argparse.Namespace, tmp: Path) -> dict:
    from fet.client import Client
    from serve.app import run
    from serve.options import AppOptions

    bundle = args.bundle
    if bundle is None:
        from tests.fet.talking_helpers import build_bundle

        bundle = build_bundle(tmp)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run(AppOptions(bundle=bundle, state_dir=str(tmp / "state"), api_key_env=None, sync_max_seconds=600), port=port)
    c = Client(f"http://127.0.0.1:{port}")
    while True:
        try:
            if c.health():
                break
        except Exception:
            time.sleep(0.5)
    face = Path(args.image).read_bytes()
    t = time.perf_counter()
    ref = c.encode(face)
    results = {"bundle": args.bundle or "random tiny test bundle", "encode_seconds": time.perf_counter() - t}
    c.edit(ref, text="glasses")  # warm-up
    audio = wav(args.seconds)
    c.generate(ref, audio)
    for clients in (1, 4):
        wall, lat = timed(lambda: c.edit(ref, text="add glasses"), args.edits, clients)
        q = statistics.quantiles(lat, n=20)
        results[f"edit_{clients}c"] = {"requests_per_s": args.edits / wall, "p50_ms": 1000 * statistics.median(lat),
                                       "p95_ms": 1000 * q[18]}  # fmt: skip
        wall, lat = timed(lambda: c.generate(ref, audio, text="smile"), args.videos, clients)
        results[f"generate_{clients}c"] = {"wall_s_per_video_s": wall / (args.videos * args.seconds),
                                           "latency_s_per_video_s": statistics.mean(lat) / args.seconds}  # fmt: skip
    return results


if __name__ == "__main__":
    main()
