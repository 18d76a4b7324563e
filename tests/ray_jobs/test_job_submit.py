"""`ray job submit` against a real `ray start --head`: the preprocessing job runs on the cluster from
the shipped working directory and writes its shards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fet.data import shards
from fet.data.synthtalk.__main__ import generate

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(900)


def submit(address: str, env: dict, *entrypoint: str) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "ray"), "job", "submit", f"--address={address}", f"--working-dir={REPO}", "--", *entrypoint]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)


def test_preprocess_through_ray_job_submit(ray_head, tmp_path):
    address, env = ray_head
    generate(tmp_path / "synthtalk", images=6, clips=2, size=64, seconds=2.0, workers=1, progress=False)
    cfg = tmp_path / "job.yaml"
    cfg.write_text("# test\n" + json.dumps({
        "sources": [{"kind": "synthtalk", "root": str(tmp_path / "synthtalk" / "clips")},
                    {"kind": "synthtalk_images", "root": str(tmp_path / "synthtalk" / "images")}],
        "out": str(tmp_path / "shards"), "size": 64,
    }))  # fmt: skip
    done = submit(address, env, "python", "-m", "ray_jobs.preprocess", "--config", str(cfg), "ray.num_workers=1")
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "succeeded" in log, log[-4000:]
    m = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert m["clips"]["rows"] == 2 and m["images"]["rows"] == 6
    row = next(shards.read_rows(str(tmp_path / "shards"), "clips"))
    assert row["landmark_source"] == "sidecar" and row["num_frames"] == 50
