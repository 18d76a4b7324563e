"""Lip sync of talking videos made from still portraits: the path of an HTTP video request, over many faces.

    python benchmarks/portrait_sync.py outputs/demo/bundle outputs/demo/synthtalk/images/test outputs/demo/shards
    python benchmarks/portrait_sync.py BUNDLE FACES_DIR SHARDS --faces 13 --scales 1 2 --text "blond hair"

Each portrait in FACES_DIR (sorted by name) is detected, aligned and inverted by the pipeline and made to
speak the first held-out clip's speech from SHARDS. Two weight-free sync scores (``fet.metrics.sync``, the
best-lag correlation of the inner-lip gap with the speech-band loudness) are printed per face: that of the
audio-driven landmarks, and that of the rendered frames read back by MediaPipe at 256 px, as the demo
measures its video. Their gap is what the renderer loses. One score on one face varies a lot at 32 px
(0.14 to 0.76 among 13 faces of one bundle), so compare bundles on the mean over many faces; the standard
error of the mean is printed with it. One JSON line per (face, scale), then one per scale with the means.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fet.bundle import load_bundle
from fet.data.shards import ShardError, check_split, read_rows, unpack
from fet.evaluation.clip import _fill_gaps, resize
from fet.landmarks.detector import NoFaceError
from fet.metrics.sync import landmark_audio_sync, mouth_opening
from fet.pipeline import FaceEditTalkerPipeline, PipelineConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("faces", help="a folder of portraits (png or jpg)")
    p.add_argument("shards", help="clip shards: the speech is the first clip of --split")
    p.add_argument("--faces", type=int, default=13, dest="count")
    p.add_argument("--scales", type=float, nargs="+", default=None, help="landmark_scale values (bundle's)")
    p.add_argument("--text", default=None, help="an edit applied to every video, e.g. 'very black hair'")
    p.add_argument("--split", default="test", help="the shards' split the clips come from")
    args = p.parse_args()
    try:
        check_split(args.shards, "clips", args.split)
    except ShardError as e:
        raise SystemExit(f"error: {e} (--split)") from None
    bundle = load_bundle(args.bundle)
    base = bundle.pipeline_defaults
    scales = args.scales or [float(base.get("landmark_scale", 1.0))]
    pipes = {s: FaceEditTalkerPipeline(bundle, PipelineConfig(**{**base, "landmark_scale": s})) for s in scales}
    clip = next(read_rows(args.shards, "clips", args.split, ["clip_id", "split", "audio"]))
    speech = unpack(clip["audio"])
    paths = sorted(q for q in Path(args.faces).iterdir() if q.suffix.lower() in {".png", ".jpg", ".jpeg"})
    results: dict[float, list[float]] = {s: [] for s in scales}
    for path in paths[: args.count]:
        try:  # the inversion does not depend on landmark_scale: one reference serves every scale
            ref = pipes[scales[0]].encode(str(path), name=path.name)
        except NoFaceError as e:
            print(json.dumps({"face": path.name, "skipped": str(e)}))
            continue
        for scale, pipe in pipes.items():
            video = pipe(ref, speech, text=args.text)
            driving = landmark_audio_sync(video.landmarks, speech)
            read_back = _fill_gaps(pipe.detector.detect_video(resize(video.frames, 256)))
            row = {"face": path.name, "landmark_scale": scale, "speech": clip["clip_id"], "edit": args.text,
                   "driving_sync": round(driving.correlation, 3), "driving_lag": driving.offset}  # fmt: skip
            if read_back is None:
                row["video_sync"] = None  # MediaPipe lost the face in every frame
            else:
                sync = landmark_audio_sync(read_back, speech)
                row |= {"video_sync": round(sync.correlation, 3), "video_lag": sync.offset,
                        "video_mouth_std": round(float(mouth_opening(read_back).std()), 4),
                        "driving_mouth_std": round(float(mouth_opening(video.landmarks).std()), 4)}  # fmt: skip
                results[scale].append(0.0 if np.isnan(sync.correlation) else sync.correlation)
            print(json.dumps(row), flush=True)
    for scale, values in results.items():
        v = np.asarray(values)
        summary = {"landmark_scale": scale, "faces": int(v.size)}
        if v.size:
            summary |= {"mean_video_sync": round(float(v.mean()), 3),
                        "standard_error": round(float(v.std(ddof=1) / np.sqrt(v.size)), 3) if v.size > 1 else None,
                        "min": round(float(v.min()), 3), "max": round(float(v.max()), 3)}  # fmt: skip
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
