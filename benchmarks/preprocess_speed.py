"""Preprocessing throughput: clip-seconds per wall-second of a plain single-process loop and of the
Ray Data job, on the same real clips, with the time split by stage.

    python benchmarks/preprocess_speed.py                  # 5 real clips x 3 copies, 2 Ray workers
    python benchmarks/preprocess_speed.py --copies 6 --workers 2 --size 256

Inputs are the talking-head clips in ../shared/media/video (HDTF-style, 5–10 s, up to 1080x1920 HEVC),
each linked ``--copies`` times under new names. The Ray time counts the dataset's execution only
(actor start-up included, ``ray.init`` not). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fet.config import load_config
from fet.data.preprocess import PreprocessConfig, run_serial
from ray_jobs.common import QUIET_ENV

MEDIA = Path(os.environ.get("FET_SHARED_MEDIA", Path(__file__).resolve().parents[2] / "shared" / "media"))


def stage_split(manifest: dict) -> dict[str, float]:
    t = manifest["clips"]["timings"]
    total = sum(t.values())
    return {k: round(v / total, 3) for k, v in sorted(t.items())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--copies", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args()
    os.environ.update(QUIET_ENV)
    clips = sorted((MEDIA / "video").glob("*.mp4"))
    if not clips:
        raise SystemExit(f"{MEDIA / 'video'}: no clips (see shared/media/MANIFEST.md)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp, "raw")
        raw.mkdir()
        for k in range(args.copies):
            for c in clips:
                (raw / f"{c.stem}_{k:03d}.mp4").symlink_to(c)
        base = ["size=" + str(args.size), "segment_seconds=20", f"ray.num_workers={args.workers}",
                f"ray.cpus_per_worker={min(1.0, 1.9 / args.workers):.2f}"]  # fmt: skip
        data = {"sources": [{"kind": "hdtf", "root": str(raw)}]}
        cfg_file = Path(tmp, "job.yaml")
        cfg_file.write_text(json.dumps(data))

        serial_cfg = load_config(PreprocessConfig, cfg_file, [*base, f"out={tmp}/serial"])
        serial = run_serial(serial_cfg, progress=True)
        seconds = serial["manifest"]["clips"]["seconds"]

        import ray

        from ray_jobs.preprocess import run

        ray.init(runtime_env={"env_vars": QUIET_ENV}, include_dashboard=False, log_to_driver=False)
        ray_cfg = load_config(PreprocessConfig, cfg_file, [*base, f"out={tmp}/ray"])
        t = time.perf_counter()
        distributed = run(ray_cfg)
        ray_wall = time.perf_counter() - t
        ray.shutdown()
    result = {
        "clips": len(clips) * args.copies,
        "clip_seconds": round(seconds, 1),
        "size": args.size,
        "serial_wall_s": round(serial["wall_seconds"], 1),
        "serial_clip_seconds_per_s": round(seconds / serial["wall_seconds"], 2),
        "ray_workers": args.workers,
        "ray_wall_s": round(ray_wall, 1),
        "ray_clip_seconds_per_s": round(seconds / ray_wall, 2),
        "speedup": round(serial["wall_seconds"] / ray_wall, 2),
        "stage_split_serial": stage_split(serial["manifest"]),
        "stage_split_ray": stage_split(distributed["manifest"]),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
