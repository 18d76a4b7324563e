"""Generate the SynthTalk world: ``python -m fet.data.synthtalk --out DIR --images 2000 --clips 200``.

Writes, in the layouts the real-data adapters read:
  DIR/images/{train,val,test}/NNNNNN.png + DIR/CelebAMask-HQ-attribute-anno.txt   (like CelebA-HQ)
  DIR/clips/{train,val,test}/clipNNNNN.mp4 + .npz ground truth                     (like HDTF)
and with ``--preview``, DIR/preview_grid.png (identities × attributes) and DIR/preview_strip.png
(frames of a clip with their landmarks drawn).
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import multiprocessing.pool
import time
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fet.data.celeba_attributes import format_celeba_attributes
from fet.data.synthtalk.world import CLIP_META, make_clip, make_image, split_of_identity
from fet.media.mp4 import write_mp4


def _write_image(i: int, out: Path, seed: int, size: int) -> tuple[str, np.ndarray]:
    item = make_image(seed, i, size)
    name = f"{i:06d}.png"
    path = out / "images" / split_of_identity(seed, "image", i) / name
    Image.fromarray(item.image).save(path)
    return name, item.labels


# x264 at CRF 18 does not always make the same choices for the same frames: with the CPUs busy (the world's
# own pool, training beside it) up to 1 in 5 encodes of one clip gave a second, different video, so a seed
# did not fix the frames that preprocessing and training read. A lossless video decodes to its frames
# (in 4:2:0) whatever the encoder chose; it is about twice the size.
LOSSLESS = 0


def _write_clip(i: int, out: Path, seed: int, size: int, seconds: float) -> str:
    clip = make_clip(seed, i, size, seconds)
    name = f"clip{i:05d}"
    folder = out / "clips" / split_of_identity(seed, "clip", i)
    write_mp4(str(folder / f"{name}.mp4"), clip.frames, clip.audio, CLIP_META["sample_rate"], CLIP_META["fps"],
              crf=LOSSLESS)  # fmt: skip
    np.savez_compressed(folder / f"{name}.npz", landmarks=clip.landmarks, transform=clip.transform, pose=clip.pose,
                        visemes=clip.visemes, attributes=clip.labels, audio=clip.audio)  # fmt: skip
    return name


def _forked_pool(workers: int) -> mp.pool.Pool:
    """A pool of forked workers that leave the caller's objects alone. A forked child would otherwise
    collect the caller's garbage and run its finalisers, and a MediaPipe landmarker's close() waits there
    on a thread the child does not have: the worker hangs. Frozen objects are never collected in the child."""
    gc.collect()
    gc.freeze()
    try:
        return mp.get_context("fork").Pool(workers)
    finally:
        gc.unfreeze()


def generate(out: Path, images: int, clips: int, size: int = 64, seconds: float = 5.0, seed: int = 0, workers: int = 2,
             progress: bool = True) -> dict:  # fmt: skip
    """Write the world to ``out`` and return timing numbers."""
    for kind in ("images", "clips"):
        for split in ("train", "val", "test"):
            (out / kind / split).mkdir(parents=True, exist_ok=True)
    stats: dict = {"size": size, "seed": seed}
    with _forked_pool(workers) as pool:
        t = time.time()
        labels = dict(tqdm(pool.imap(partial(_write_image, out=out, seed=seed, size=size), range(images), chunksize=16),
                           total=images, desc="SynthTalk images", disable=not progress))  # fmt: skip
        stats["images"], stats["image_seconds"] = images, time.time() - t
        (out / "CelebAMask-HQ-attribute-anno.txt").write_text(format_celeba_attributes(dict(sorted(labels.items()))))
        t = time.time()
        list(tqdm(pool.imap(partial(_write_clip, out=out, seed=seed, size=size, seconds=seconds), range(clips)),
                  total=clips, desc="SynthTalk clips", disable=not progress))  # fmt: skip
        stats["clips"], stats["clip_seconds_generated"], stats["clip_seconds"] = clips, clips * seconds, time.time() - t
    (out / "synthtalk.json").write_text(json.dumps({**CLIP_META, **stats}, indent=2))
    return stats


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m fet.data.synthtalk", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--size", type=int, default=64, help="square frame size in pixels (even; 64–128 recommended)")
    p.add_argument("--seconds", type=float, default=5.0, help="clip length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=max(1, mp.cpu_count()))
    p.add_argument("--preview", action="store_true", help="also write preview_grid.png and preview_strip.png")
    args = p.parse_args(argv)
    if args.size % 2 or args.size < 32:
        p.error(f"--size {args.size}: expected an even number >= 32")
    counts = (("--images", args.images, 0), ("--clips", args.clips, 0), ("--workers", args.workers, 1))
    for flag, value, least in counts:
        if value < least:
            p.error(f"{flag} {value}: expected {least} or more")
    if args.clips and args.seconds <= 0:
        p.error(f"--seconds {args.seconds:g}: expected a positive clip length")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        p.error(f"--out {args.out}: cannot be created ({e.strerror})")
    stats = generate(args.out, args.images, args.clips, args.size, args.seconds, args.seed, args.workers)
    if args.preview:
        from fet.data.synthtalk.preview import write_previews

        write_previews(args.out, seed=args.seed)
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
