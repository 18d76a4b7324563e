"""Does the generated mouth move with the driving landmarks? Test clips of a bundle, rendered through
the pipeline from their first frame and their ground-truth landmarks, measured with MediaPipe.

    python benchmarks/mouth_motion.py outputs/demo/bundle outputs/demo/shards
    python benchmarks/mouth_motion.py BUNDLE SHARDS --scales 1 2 --clips 3 --seconds 4

For each clip and landmark scale it prints the mouth opening (inner-lip gap / face height) of the
driving landmarks and of the generated frames (MediaPipe on the frames enlarged to 256 px, as the
evaluation does): their standard deviations, the ratio, and the correlation of the two over time. The
real frames of the clip are measured the same way, as the ceiling at this resolution. One JSON line per
(clip, scale), then the means; a strip of real and generated frames (closed and open mouth) is written
next to the bundle as ``mouth_motion.png``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fet.bundle import load_bundle
from fet.data.shards import ShardError, check_split, read_rows, unpack
from fet.evaluation.clip import _fill_gaps, resize
from fet.images import image_grid
from fet.landmarks.detector import FaceLandmarks
from fet.metrics.sync import mouth_opening
from fet.pipeline import FaceEditTalkerPipeline, PipelineConfig
from fet.storage import join


def measured(pipe: FaceEditTalkerPipeline, frames: np.ndarray) -> np.ndarray | None:
    points = _fill_gaps(pipe.detector.detect_video(resize(frames, 256)))
    return None if points is None else mouth_opening(points)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("shards")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0], help="landmark_scale values")
    p.add_argument("--clips", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--split", default="test", help="the shards' split the clips come from")
    args = p.parse_args()
    try:
        check_split(args.shards, "clips", args.split)
    except ShardError as e:
        raise SystemExit(f"error: {e} (--split)") from None
    bundle = load_bundle(args.bundle)
    base = bundle.pipeline_defaults
    pipes = {s: FaceEditTalkerPipeline(bundle, PipelineConfig(**{**base, "landmark_scale": s})) for s in args.scales}
    rows, strips = [], []
    for row in list(read_rows(args.shards, "clips", args.split))[: args.clips]:
        n = int(args.seconds * 25)
        real = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in row["frames"][:n]])
        lms, transforms = unpack(row["landmarks"])[:n], unpack(row["transform"])[:n]
        drive = mouth_opening(lms)
        real_mouth = measured(pipes[args.scales[0]], real)
        lo, hi = int(drive.argmin()), int(drive.argmax())
        strip = [real[lo], real[hi]]
        for scale, pipe in pipes.items():
            ref = pipe.encode(real[0], FaceLandmarks(lms[0], transforms[0], np.zeros(52, np.float32)))
            frames = pipe.render([ref] * len(lms), lms[:, :, :2])
            gen = measured(pipe, frames)
            strip += list(resize(frames[[lo, hi]], real.shape[1]))  # the model's size may not be the shards'
            rows.append({
                "clip": row["clip_id"], "landmark_scale": scale, "frames": len(frames),
                "driving_std": float(drive.std()),
                "real_std": None if real_mouth is None else float(real_mouth.std()),
                "generated_std": None if gen is None else float(gen.std()),
                "generated_over_driving": None if gen is None else float(gen.std() / drive.std()),
                "corr_generated_driving": None if gen is None else corr(gen, drive),
                "corr_real_driving": None if real_mouth is None else corr(real_mouth, drive),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        strips.append(np.stack(strip))
    for scale in args.scales:
        mine = [r for r in rows if r["landmark_scale"] == scale and r["generated_std"] is not None]
        keys = ["driving_std", "real_std", "generated_std", "generated_over_driving", "corr_generated_driving"]
        mean = {k: round(float(np.nanmean([r[k] for r in mine if r[k] is not None])), 4) for k in keys} if mine else {}
        print(json.dumps({"landmark_scale": scale, "clips_with_faces": len(mine), "mean": mean}))
    grid = image_grid(np.concatenate(strips), rows=len(strips))
    out = join(str(Path(args.bundle).parent), "mouth_motion.png")
    grid.resize((grid.width * 3, grid.height * 3), Image.Resampling.NEAREST).save(out)
    print(f"columns: real closed, real open, then generated closed/open per scale {args.scales} → {out}")


if __name__ == "__main__":
    main()
