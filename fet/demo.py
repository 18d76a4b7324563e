"""The single-process library demo on the embedded default (CPU, no downloads, no Ray): ``python -m fet.demo``.

SynthTalk faces → stage 1 (semantic encoder + denoiser) → stage 2 (attribute classifiers) → edit
held-out faces from text → ``OUT/``: ``edits_grid.png`` (input, reconstruction, one column per edit),
``edited.png`` and ``summary.json``. The whole platform end to end (Ray jobs, video, Serve) is
``ray_jobs.demo``, which ``make demo`` runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fet.config import load_config
from fet.data.synthtalk.__main__ import generate
from fet.editing.attributes import ATTRIBUTE_INDEX
from fet.editor import FaceEditor
from fet.images import image_grid, save_image
from fet.training.config import Stage1Config, Stage2Config
from fet.training.stage1 import train_stage1
from fet.training.stage2 import train_stage2

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"
# 32 px keeps a stage-1 step at ~0.6 s on 2 cores (64 px: ~2 s); pass model.image_size=64 for sharper faces
DEMO_MODEL = ["model.image_size=32", "batch_size=16", "optim.lr=5e-4", "optim.warmup_steps=50"]
EDITS = [
    ("add glasses", "Eyeglasses"),
    ("make them smile", "Smiling"),
    ("blond hair", "Blond_Hair"),
    ("add a hat", "Wearing_Hat"),
]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m fet.demo", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("outputs/demo"))
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--steps", type=int, default=600, help="stage-1 optimizer steps")
    p.add_argument("overrides", nargs="*", help="stage-1 key=value overrides")
    args = p.parse_args(argv)
    start = time.time()
    data, model_dir = args.out / "synthtalk", args.out / "model"
    print(f"[1/4] SynthTalk: {args.images} faces → {data}")
    generate(data, images=args.images, clips=0, size=64, seed=0)
    common = [f"data.images={data / 'images'}", f"data.attributes={data / 'CelebAMask-HQ-attribute-anno.txt'}"]
    print(f"[2/4] stage 1: semantic encoder + denoiser, {args.steps} steps")
    s1 = load_config(Stage1Config, CONFIGS / "stage1_tiny.yaml",
                     [*common, f"out={model_dir}", f"steps={args.steps}", *DEMO_MODEL, *args.overrides])  # fmt: skip
    m1 = train_stage1(s1)
    print("[3/4] stage 2: attribute classifiers on z_sem")
    s2 = load_config(
        Stage2Config, CONFIGS / "stage2_tiny.yaml", [*common, f"autoencoder={model_dir}", f"out={model_dir}"]
    )
    m2 = train_stage2(s2)
    print("[4/4] editing held-out faces")
    editor = FaceEditor.load(str(model_dir))
    faces = sorted((data / "images" / "test").glob("*.png"))[:4]
    rows, flips = [], []
    for path in faces:
        face = editor.encode(str(path), steps=s1.eval_steps)
        row = [face.image, editor.model.render(face.x_T, face.z_sem, s1.eval_steps)]
        for text, attr in EDITS:
            parsed = editor.parse(text=text)
            edited = editor.edit(face, parsed.edits, s1.eval_steps)
            row.append(edited)
            if attr in editor.classifier.trained_attributes:  # did the edit move the attribute's logit up?
                k = ATTRIBUTE_INDEX[attr]
                with torch.no_grad():
                    before = editor.classifier(editor.model.encode(face.image))[0, k]
                    after = editor.classifier(editor.model.encode(edited))[0, k]
                flips.append(float(after > before))
        rows.append(torch.cat(row))
    save_image(image_grid(torch.cat(rows), rows=len(rows)), str(args.out / "edits_grid.png"))
    first_edit = editor.edit_image(str(faces[0]), text="add glasses and a hat", steps=s1.eval_steps)[0]
    first_edit.save(args.out / "edited.png")
    summary = {
        "stage1": m1, "stage2": {k: v for k, v in m2.items() if k != "val_auroc"},
        "stage2_val_auroc": m2["val_auroc"], "edit_logit_increase_rate": float(np.mean(flips)) if flips else None,
        "wall_seconds": round(time.time() - start, 1),
        "grid_columns": ["input", "reconstruction", *[t for t, _ in EDITS]],
    }  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"outputs in {args.out}: edits_grid.png, edited.png, summary.json, model/")


if __name__ == "__main__":
    main()
