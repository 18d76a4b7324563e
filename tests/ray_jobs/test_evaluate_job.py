"""The evaluation job on a real local Ray: SynthTalk test clips, a tiny saved bundle, Table 1/2 written
and logged to an MLflow run; bad inputs end the job with a message."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch

from fet.metrics.inception import FIDInception
from ray_jobs import evaluate
from tests.conftest import unreachable_endpoint
from tests.fet.helpers import count_listings
from tests.fet.talking_helpers import build_bundle

pytestmark = pytest.mark.timeout(600)


def test_evaluation_job_writes_the_tables_and_the_mlflow_run(local_ray, synthtalk_shards, tmp_path, monkeypatch):
    """Every path given relative to the job's directory, which is not the one Ray's workers run in."""
    from mlflow import MlflowClient

    bundle = build_bundle(tmp_path)
    torch.save(FIDInception().state_dict(), tmp_path / "inception.pth")
    db, out = tmp_path / "mlflow.db", tmp_path / "eval"
    monkeypatch.chdir(tmp_path)
    listings = count_listings(monkeypatch)
    summary = evaluate.main([
        f"shards={os.path.relpath(synthtalk_shards)}", "bundle=bundle", "out=eval", "max_seconds=0.8",
        "eval_size=192", "edits=[add glasses]", "weights.fid_weights=inception.pth", "ray.num_workers=1",
        "ray.cpus_per_worker=1", "mlflow.tracking_uri=sqlite:///mlflow.db", "mlflow.run_name=eval-test",
    ])  # fmt: skip
    assert summary["clips"] == 2 and summary["reused"] == 0 and summary["failed"] == {}  # the fixture's test split
    assert listings == [(synthtalk_shards, "clips")]  # its check and its two reads see one listing

    results = (out / "results.md").read_text()
    assert "| Method | FID | SSIM | PSNR | CPBD | Min Dist | AVConf | AVOffset | M-LMD | F-LMD |" in results
    assert "| Edit | TL-ID | TG-ID |" in results and "| add glasses |" in results
    assert "Min Dist: no weights given; set weights.syncnet_weights to syncnet_v2.model" in results
    table1 = list(csv.DictReader((out / "table1.csv").open()))
    assert [r["Method"] for r in table1] == ["Generated", "Real (test clips)"]
    generated = table1[0]
    assert float(generated["FID"]) >= 0 and 0 < float(generated["SSIM"]) <= 1 and float(generated["PSNR"]) > 10
    assert generated["Min Dist"] == "skipped" and generated["AVOffset"] == "skipped"
    per_clip = list(csv.DictReader((out / "per_clip.csv").open()))
    assert len(per_clip) == 2 and all(int(r["frames"]) == 20 for r in per_clip)
    assert (out / "preview.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "results.json").read_text())["skipped"]["AVConf"].startswith("no weights given")

    client = MlflowClient(f"sqlite:///{db}")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "eval-test"
    assert {"generated.psnr", "generated.ssim", "generated.fid", "real.cpbd", "clips"} <= set(run.data.metrics)
    assert run.data.metrics["generated.psnr"] == pytest.approx(float(generated["PSNR"]))
    assert run.data.params["bundle"] == bundle and "skipped.Min Dist" in run.data.tags
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/results.md", "evaluation/table1.csv", "evaluation/preview.png"} <= artifacts


def test_the_evaluation_job_refuses_what_it_would_fail_on_before_ray_starts(
    synthtalk_shards, tmp_path, monkeypatch, capsys
):
    """No clip shards or none in the split, no bundle or one with a file missing, an edit the bundle cannot
    make, a tracking server that does not answer: each ends the job with a message before Ray starts (MLflow
    is logged last: unchecked, the server's silence would be found after every clip had been generated; an
    unknown edit was found by each actor as it loaded, and ended the job in Ray's tracebacks)."""

    def ray_started(address=None):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(evaluate, "init_ray", ray_started)
    bundle = build_bundle(tmp_path)
    partial = tmp_path / "partial"
    shutil.copytree(bundle, partial)
    (partial / "pose_guider.safetensors").unlink()
    server = unreachable_endpoint()
    good = [f"shards={synthtalk_shards}", f"bundle={bundle}", f"out={tmp_path / 'eval'}"]
    cases = {
        f"shards={tmp_path / 'none'}": f"{tmp_path / 'none'}: no clips shards; run the preprocessing job",
        "split=holdout": f"{synthtalk_shards}: no clips in split 'holdout'; the shards hold 2 in 'test', 7 in 'train', "
        "1 in 'val'; choose one of them",
        f"bundle={tmp_path / 'nowhere'}": f"{tmp_path / 'nowhere'}: no bundle.json",
        f"bundle={partial}": f"bundle {partial}: missing component file(s) pose_guider.safetensors",
        f"mlflow.tracking_uri={server}": f"mlflow.tracking_uri={server}: the tracking server does not answer",
        "edits=[add glasses, turn into a dragon]": "edits: 'turn into a dragon' names no attribute the bundle can "
        "edit (unrecognised: dragon)",
        "edits=[blond hair and a dragon tail]": "edits: 'blond hair and a dragon tail' names no attribute the bundle "
        "can edit (unrecognised: dragon, tail)",
    }
    for override, message in cases.items():
        with pytest.raises(SystemExit) as done:
            evaluate.main([*good, override])
        err = capsys.readouterr().err
        assert done.value.code == 2 and f"error: {message}" in err, (override, err)


def test_a_clip_that_fails_is_reported_and_an_evaluation_run_again_reuses_what_was_done(
    local_ray, synthtalk_shards, tmp_path, capsys
):
    """One test clip's audio is cut to less than a frame: that clip fails with its reason in the tables'
    notes and the other is measured. Run again into the same `out` (as after a stopped run), the measured
    clip's kept record is used, not generated again, and the failed one is tried again (what else keeps or
    drops the records: tests/fet/test_evaluation.py). When every clip fails, here because the actors cannot
    start (metric weights that are no weights file), the job does, with the first clip's error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fet.data.shards import pack, shard_files

    shards = tmp_path / "shards"
    shutil.copytree(synthtalk_shards, shards)

    cut = []  # the first test clip's audio cut to 10 samples (less than a frame)
    for f in shard_files(str(shards), "clips"):
        table = pq.read_table(f)
        rows = table.to_pylist()
        for row in rows:
            if row["split"] == "test" and not cut:
                cut.append(row["clip_id"])
                row["audio"] = pack(np.zeros(10, np.float32))
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), f)
    [bad] = cut
    bundle = build_bundle(tmp_path)
    args = [f"shards={shards}", f"bundle={bundle}", f"out={tmp_path / 'eval'}", "max_seconds=0.4", "eval_size=192",
            "edits=[]", "ray.num_workers=1", "ray.cpus_per_worker=1",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    first = evaluate.main(args)
    assert first["clips"] == 1 and first["reused"] == 0 and list(first["failed"]) == [bad], first["failed"]
    assert "IndexError" in first["failed"][bad]
    results = (tmp_path / "eval" / "results.md").read_text()
    assert f"clip {bad} failed and is not in the tables: IndexError" in results and "Evaluated clips: 1" in results
    kept = sorted((tmp_path / "eval" / "clips").glob("*.npz"))
    assert len(kept) == 1  # the measured clip's record; the failed one keeps none
    again = evaluate.main(args)
    assert again["clips"] == 1 and again["reused"] == 1 and list(again["failed"]) == [bad]
    assert again["metrics"] == first["metrics"] and sorted((tmp_path / "eval" / "clips").glob("*.npz")) == kept
    # metric weights that are no weights file: each clip says why the actor could not start, and every clip
    # failed ends the job, in one line
    (tmp_path / "notes.pth").write_text("these are notes, not weights")
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        evaluate.main([*args, f"out={tmp_path / 'eval2'}", f"weights.fid_weights={tmp_path / 'notes.pth'}"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "error: evaluation: every clip failed (2); the first, " in err, err[-2000:]
    assert (f"the evaluation actor could not start: ValueError: {tmp_path / 'notes.pth'}: not a PyTorch weights "
            "file of FID Inception") in err and "Traceback" not in err, err[-2000:]  # fmt: skip


def test_kept_records_are_read_by_the_driver_and_max_clips_takes_the_first_clips_by_id(
    local_ray, synthtalk_shards, tmp_path, monkeypatch
):
    """With every clip's record kept, the job reads them and starts no actor (no pipeline or metric networks
    are loaded for nothing); ``max_clips`` takes the split's first clips by clip id, whatever the shard files
    are called."""
    import pyarrow.parquet as pq

    from fet.data.shards import shard_files
    from fet.evaluation.config import EvalConfig
    from fet.evaluation.records import ClipRecords, encode

    test_ids = sorted(r["clip_id"] for f in shard_files(synthtalk_shards, "clips")
                      for r in pq.read_table(f, columns=["clip_id", "split"]).to_pylist() if r["split"] == "test")  # fmt: skip
    assert len(test_ids) == 2
    cfg = EvalConfig(shards=synthtalk_shards, out=str(tmp_path / "eval"))
    settings = {"made": "by this test"}
    kept = ClipRecords(cfg.out, settings)
    kept.prepare()
    for i, clip_id in enumerate(reversed(test_ids)):
        kept.put(clip_id, encode({"clip_id": clip_id, "psnr": float(i), "frames": np.arange(3)}))
    monkeypatch.setattr(evaluate, "EvaluateClips", None)  # an actor would be made of it and fail at once
    records = evaluate._records(cfg, settings)
    expected = [(test_ids[0], 1.0, True), (test_ids[1], 0.0, True)]  # each record as it was kept
    assert [(r["clip_id"], r["psnr"], r["reused"]) for r in records] == expected
    assert records[0]["frames"].tolist() == [0, 1, 2]
    cfg.max_clips = 1
    assert [r["clip_id"] for r in evaluate._records(cfg, settings)] == test_ids[:1]
