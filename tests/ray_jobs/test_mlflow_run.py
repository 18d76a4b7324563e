"""Which MLflow run a training run logs into (no Ray needed: the driver picks it before the workers start).
One MLflow run per training run, kept across resubmissions; a new training run under a name used before
gets its own."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow import MlflowClient

from fet.config import load_config
from fet.training.job_config import TrainJobConfig
from ray_jobs import tracking
from ray_jobs.train import MLFLOW_RUN, mlflow_run

REPO = Path(__file__).resolve().parents[2]


def job(tmp: Path, storage: str) -> TrainJobConfig:
    return load_config(TrainJobConfig, REPO / "configs/train/ray/stage1_tiny.yaml",
                       [f"storage_path={tmp / storage}", "name=faces", f"mlflow.tracking_uri=sqlite:///{tmp / 'm.db'}"])  # fmt: skip


def test_a_resubmission_reopens_its_run_and_a_new_training_run_of_the_same_name_gets_its_own(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    first = mlflow_run(job(tmp_path, "a"))
    client.set_terminated(first, "FAILED")  # a worker failed past max_failures; the user submits it again
    assert mlflow_run(job(tmp_path, "a")) == first and client.get_run(first).info.status == "RUNNING"
    recorded = json.loads((tmp_path / "a" / "faces" / MLFLOW_RUN).read_text())
    assert recorded == {"run_id": first, "experiment": "faceedittalker"}
    # the same name trained afresh elsewhere: before, its steps were logged over the first run's, under its params
    other = mlflow_run(job(tmp_path, "b"))
    assert other != first and client.get_run(other).data.params["storage_path"] == str(tmp_path / "b")
    client.delete_run(other)  # deleted in the UI: the training run goes on in a new one
    assert mlflow_run(job(tmp_path, "b")) not in (first, other)


def test_a_run_checkpointed_before_runs_were_recorded_is_found_by_its_name(tmp_path):
    cfg = job(tmp_path, "c")
    earlier = tracking.new_run(cfg.mlflow.tracking_uri, cfg.mlflow.experiment, "faces", {"steps": 600}, {})
    checkpoint = tmp_path / "c" / "faces" / "checkpoint_2026-12-01_00-00-00.000000"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.json").write_text('{"step": 100}')
    assert mlflow_run(cfg) == earlier
    assert json.loads((tmp_path / "c" / "faces" / MLFLOW_RUN).read_text())["run_id"] == earlier
