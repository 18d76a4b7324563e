"""How much of a rendered face the semantic code z_sem controls, against the stochastic code x_T.

    python benchmarks/semantic_control.py BUNDLE FACES_DIR [--faces 6] [--out grid.png]

Attribute edits move z_sem only (paper Eq. 1), so they can show only where the decoder listens to z_sem.
For each face in FACES_DIR (portraits; detected, aligned and inverted by ``pipe.encode``) it measures:

- ``reconstruction_psnr_db``: the face rendered from its own (x_T, z_sem).
- ``semantic_share``: with x_T kept, z_sem swapped for the next face's; the pixel change this causes as a
  share of how much the two faces differ. 1: z_sem decides the face; 0: x_T alone does.
- ``from_noise_psnr_db``: the face rendered from its own z_sem but fresh Gaussian x_T, against the face.
  A decoder that uses z_sem gives a recognisable face (well above the ~10 dB of unrelated images).

Writes a grid (rows: input, reconstruction, z_sem swapped, fresh x_T) and prints one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fet.images import image_grid
from fet.landmarks.detector import NoFaceError
from fet.pipeline import FaceEditTalkerPipeline


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("faces", type=Path)
    p.add_argument("--faces", dest="count", type=int, default=6)
    p.add_argument("--out", type=Path, default=None, help="grid PNG (default: semantic_control.png next to BUNDLE)")
    args = p.parse_args()
    pipe = FaceEditTalkerPipeline.from_bundle(args.bundle)
    refs, skipped = [], []
    for f in sorted(args.faces.glob("*.png")) + sorted(args.faces.glob("*.jpg")):
        if len(refs) == args.count:
            break
        try:
            refs.append(pipe.encode(str(f), name=f.name))
        except NoFaceError:
            skipped.append(f.name)
    if len(refs) < 2:
        raise SystemExit(f"{args.faces}: need at least 2 faces MediaPipe can find, got {len(refs)}")
    gen = torch.Generator().manual_seed(0)
    own = np.stack([r.landmarks.points[:, :2] for r in refs])
    inputs = np.stack([((r.image[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy() for r in refs])
    recon = pipe.render(refs, own)
    other = refs[1:] + refs[:1]
    swapped = pipe.render([dataclasses.replace(r, z_sem=o.z_sem) for r, o in zip(refs, other)], own)
    noise = [dataclasses.replace(r, x_T=torch.randn(r.x_T.shape, generator=gen)) for r in refs]
    fresh = pipe.render(noise, own)
    shares = []
    for k in range(len(refs)):
        moved = np.abs(swapped[k].astype(float) - recon[k].astype(float)).mean()
        apart = np.abs(inputs[(k + 1) % len(refs)].astype(float) - inputs[k].astype(float)).mean()
        shares.append(moved / max(apart, 1e-6))
    out = args.out or Path(args.bundle).resolve().parent / "semantic_control.png"
    grid = image_grid(np.concatenate([inputs, recon, swapped, fresh]), rows=4)
    grid.resize((grid.width * 3, grid.height * 3), Image.Resampling.NEAREST).save(out)
    print(json.dumps({
        "faces": len(refs),
        "skipped_no_face": skipped,
        "reconstruction_psnr_db": round(float(np.mean([psnr(a, b) for a, b in zip(recon, inputs)])), 2),
        "semantic_share": round(float(np.mean(shares)), 3),
        "from_noise_psnr_db": round(float(np.mean([psnr(a, b) for a, b in zip(fresh, inputs)])), 2),
        "unrelated_faces_psnr_db": round(float(np.mean([psnr(inputs[k], inputs[(k + 1) % len(refs)])
                                                        for k in range(len(refs))])), 2),
        "grid": str(out),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
