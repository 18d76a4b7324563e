"""The single-process trainers and ``fet edit`` through their command lines, on a small image folder."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fet.data.celeba_attributes import format_celeba_attributes
from fet.editing.attributes import ATTRIBUTE_INDEX
from fet.lineage import encoder_digest

SMALL_MODEL = [
    "model.image_size=16", "model.base_channels=16", "model.channel_mult=[1,2]", "model.encoder_channel_mult=[1,2]",
    "model.z_dim=32", "model.attention_resolutions=[8]", "model.attention_head_dim=16",
]  # fmt: skip


def make_folder(root, n=48):
    """Faces-like blobs; half of them wear 'glasses' (a dark bar), labelled as Eyeglasses."""
    rng = np.random.default_rng(0)
    labels = {}
    for i in range(n):
        img = np.full((32, 32, 3), rng.integers(120, 200), np.uint8)
        img[6:28, 8:24] = rng.integers(170, 230, 3)
        if i % 2:
            img[12:16, 6:26] = 20
        Image.fromarray(img).save(root / f"{i}.png")
        lab = np.full(40, -1, np.int8)
        lab[ATTRIBUTE_INDEX["Eyeglasses"]] = i % 2
        labels[f"{i}.png"] = lab
    (root / "anno.txt").write_text(format_celeba_attributes(labels))


def run(*args):
    out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_stage1_stage2_and_edit_from_the_command_line(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    make_folder(images)
    model = tmp_path / "model"
    data = [f"data.images={images}", f"data.attributes={images / 'anno.txt'}", "data.val_fraction=0.25"]
    run(
        "fet.train",
        "stage1",
        *SMALL_MODEL,
        *data,
        "steps=30",
        "batch_size=8",
        "eval_steps=5",
        "optim.lr=2e-3",
        "optim.warmup_steps=1",
        f"out={model}",
    )
    m1 = json.loads((model / "metrics_stage1.json").read_text())
    assert m1["steps"] == 30 and m1["loss_last"] < m1["loss_first"]
    assert (model / "samples_stage1.png").exists()

    run("fet.train", "stage2", f"autoencoder={model}", f"out={model}", *data, "epochs=50")
    m2 = json.loads((model / "metrics_stage2.json").read_text())
    assert m2["trained_attributes"] == ["Eyeglasses"]
    lineage = json.loads((model / "lineage.json").read_text())  # the stage-1 encoder stage 2 read faces with
    assert lineage["semantic_encoder_sha256"] == encoder_digest(str(model))

    out = tmp_path / "edited.png"
    res = run("fet.cli", "edit", "--model", str(model), "--image", str(images / "0.png"),
              "--text", "add glasses and a tiara", "--steps", "5", "-o", str(out))  # fmt: skip
    assert "tiara" in res.stderr
    assert Image.open(out).size == (16, 16)

    bad = subprocess.run([sys.executable, "-m", "fet.cli", "edit", "--model", str(model), "--image", str(images / "0.png"),
                          "--edit", "Smiling=0.3", "-o", str(out)], capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and "'Smiling' has no trained classifier" in bad.stderr

    # stage 2's output alone, as the Ray jobs write each stage to its own `out`: it names its stage 1
    stage2 = tmp_path / "stage2"
    stage2.mkdir()
    for name in ("attribute_classifier.json", "attribute_classifier.safetensors", "attribute_library.json",
                 "lineage.json"):  # fmt: skip
        shutil.copy(model / name, stage2 / name)
    from fet.cli import main

    main(["edit", "--model", str(stage2), "--image", str(images / "0.png"), "--text", "add glasses", "--steps", "5",
          "-o", str(tmp_path / "from_stage2.png")])  # fmt: skip
    assert np.array_equal(np.asarray(Image.open(tmp_path / "from_stage2.png")), np.asarray(Image.open(out)))
    lineage["semantic_encoder_sha256"] = "0" * 64  # a stage 1 trained again since, at the same place
    (stage2 / "lineage.json").write_text(json.dumps(lineage))
    with pytest.raises(SystemExit):
        main(["edit", "--model", str(stage2), "--image", str(images / "0.png"), "-o", str(tmp_path / "x.png")])
    assert f"the stage 2 component was trained on the stage-1 semantic encoder of {str(model)!r}, not on the one " \
           f"in {model}" in capsys.readouterr().err  # fmt: skip


def test_a_bad_training_config_is_refused_with_its_reason_and_no_traceback(tmp_path, capsys):
    from fet.cli import main

    cases = {
        ("stepz=3",): "override 'stepz=3': Stage1Config: unknown key(s) ['stepz']; expected some of ['batch_size',",
        ("steps=abc",): "override 'steps=abc': steps: expected an integer, got 'abc'",
        ("--config", str(tmp_path / "none.yaml")): f"{tmp_path / 'none.yaml'}: no such file",
        ("--config", "configs/train/stage1_tiny.yaml", "stepz=3"): "override 'stepz=3': Stage1Config: unknown key",
        (
            "--config",
            "configs/train/stage1_tiny.yaml",
            f"data.images={tmp_path / 'none'}",
            "steps=1",
        ): f"{tmp_path / 'none'}: not a directory",  # found by the trainer: still a message, not a traceback
    }
    for args, message in cases.items():
        with pytest.raises(SystemExit) as e:
            main(["train", "stage1", *args])
        assert e.value.code == 2 and f"fet train: error: {message}" in capsys.readouterr().err


def test_the_library_demo_trains_edits_and_writes_its_pictures(tmp_path):
    """``python -m fet.demo``, the single-process demo without Ray, with a few faces and steps."""
    out = tmp_path / "demo"
    run("fet.demo", "--out", str(out), "--images", "40", "--steps", "3")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stage1"] and summary["stage2_val_auroc"] and 0.0 <= summary["edit_logit_increase_rate"] <= 1.0
    grid, edited = Image.open(out / "edits_grid.png"), Image.open(out / "edited.png")
    columns = len(summary["grid_columns"])  # input, reconstruction, then one per edit; a row per test face
    assert columns == 6 and grid.width == columns * 32 and grid.height in (32, 64, 96, 128)
    assert edited.size == (32, 32)
