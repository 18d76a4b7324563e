"""Preprocessing throughput: clip-seconds per wall-second of a plain single-process loop and of the
Ray Data job, on the same real clips, with the time split by stage.

It also measures the machine's own ceiling for that speed-up: ``--workers`` plain loops in separate
processes, each on its share of the clips (balanced by file size), started together and timed until
the last one ends. No scheduler can beat that on these cores; ``ray_efficiency`` is the Ray job's
speed-up as a share of it.

    python benchmarks/preprocess_speed.py                  # 5 real clips x 3 copies, 2 Ray workers
    python benchmarks/preprocess_speed.py --copies 6 --workers 2 --size 256

Inputs are the talking-head clips in ../shared/media/video (HDTF-style, 5–10 s, up to 1080x1920 HEVC),
each linked ``--copies`` times under new names. The Ray time counts the dataset's execution only
(actor start-up included, ``ray.init`` not). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
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


def plain_part(cfg_file: str, overrides: list[str]) -> tuple[float, float]:
    """One plain loop in its own process, held to one thread like a Ray worker: (start, end) times."""
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    os.environ.update(QUIET_ENV)
    cfg = load_config(PreprocessConfig, cfg_file, overrides)
    start = time.time()
    run_serial(cfg, progress=False)
    return start, time.time()


def parallel_plain(links: list[Path], tmp: Path, base: list[str], workers: int) -> float:
    """Wall seconds of ``workers`` plain loops run side by side on a size-balanced split of ``links``."""
    loads, parts = [0] * workers, [[] for _ in range(workers)]
    for link in sorted(links, key=lambda p: -p.resolve().stat().st_size):  # largest first onto the lightest part
        k = loads.index(min(loads))
        loads[k] += link.resolve().stat().st_size
        parts[k].append(link)
    jobs = []
    for k, part in enumerate(parts):
        raw = tmp / f"plain_raw{k}"
        raw.mkdir()
        for link in part:
            (raw / link.name).symlink_to(link.resolve())
        cfg_file = tmp / f"plain{k}.yaml"
        cfg_file.write_text(json.dumps({"sources": [{"kind": "hdtf", "root": str(raw)}]}))
        jobs.append((str(cfg_file), [*base, f"out={tmp}/plain{k}"]))
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        spans = pool.starmap(plain_part, jobs)
    return max(e for _, e in spans) - min(s for s, _ in spans)


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
        plain_wall = parallel_plain(sorted(raw.iterdir()), Path(tmp), base, args.workers)

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
        "plain_processes_wall_s": round(plain_wall, 1),
        "ceiling_speedup": round(serial["wall_seconds"] / plain_wall, 2),
        "ray_efficiency": round(plain_wall / ray_wall, 2),
        "stage_split_serial": stage_split(serial["manifest"]),
        "stage_split_ray": stage_split(distributed["manifest"]),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
