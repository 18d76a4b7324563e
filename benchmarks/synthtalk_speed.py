"""SynthTalk generation speed: images/s and clip-seconds/s on this machine.

.venv/bin/python benchmarks/synthtalk_speed.py --images 2000 --clips 200 --seconds 5 --size 64
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fet.data.synthtalk.__main__ import generate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        t = time.time()
        s = generate(Path(d), args.images, args.clips, args.size, args.seconds, seed=0, workers=args.workers)
        total = time.time() - t
    print(json.dumps({
        "images": args.images, "clips": args.clips, "clip_seconds": args.clips * args.seconds, "size": args.size,
        "workers": args.workers, "images_per_s": round(args.images / s["image_seconds"], 1),
        "clip_seconds_per_s": round(args.clips * args.seconds / max(1e-9, s["clip_seconds"]), 2),
        "total_wall_s": round(total, 1),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
