"""Ray Train + DeepSpeed ZeRO-2 on 2 CPU workers: every stage trains on real SynthTalk shards and
is tracked in MLflow (SQLite); a worker killed mid-run resumes from its S3 checkpoint and the run
ends with exactly the configured steps; a finished run name is not trained again; the components
assemble into a bundle that loads."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
from mlflow import MlflowClient

from fet import storage
from fet.bundle import held_out_aurocs, load_bundle
from fet.config import load_config
from fet.data.shards import read_rows
from fet.lineage import encoder_digest
from fet.training.job_config import TrainJobConfig
from ray_jobs import export_bundle, tracking, train
from ray_jobs.demo import PAIRED_WORKER_CPUS, WAVES
from ray_jobs.driver_lease import LEASE, RunHeldError
from ray_jobs.train import run
from tests.conftest import S3_SECRET
from tests.fet.helpers import count_listings

pytestmark = pytest.mark.timeout(900)
PASSWORD = "fet-test-mlflow-password-3Kp9"  # of the tracking URI: found nowhere else


def job(stage: str, tmp, shards: str, *overrides: str) -> TrainJobConfig:
    return load_config(TrainJobConfig, f"configs/train/ray/{stage}_tiny.yaml", [
        f"data.shards={shards}", f"storage_path={tmp / 'ray'}", f"out={tmp / stage}",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}", "mlflow.log_every=5", "mlflow.sample_every=0",
        "checkpoint.every=10", *overrides])  # fmt: skip


def loss_history(uri: str, run_id: str) -> list[float]:
    return [m.value for m in sorted(MlflowClient(uri).get_metric_history(run_id, "loss"), key=lambda m: m.step)]


def test_every_stage_trains_tracks_and_exports_a_bundle(local_ray, synthtalk_shards, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    listings = count_listings(monkeypatch)
    s1 = str(tmp_path / "stage1")
    plans = {
        # stages 1 and 3 stream their rows from the shards every epoch, as the paper configs do; stage 2 too,
        # after the pass its prepare reads (its configs keep their codes; the job-submit test trains them so)
        "stage1": ["steps=20", "optim.lr=1e-3", "optim.warmup_steps=5", "task.eval_steps=5", "data.cache=false"],
        "stage2": ["steps=30", f"task.autoencoder={s1}", "task.eval_steps=3", "data.cache=false"],
        "audio": ["steps=30", "optim.lr=3e-3", "optim.warmup_steps=5"],
        "stage3": ["steps=20", f"task.autoencoder={s1}", "optim.lr=1e-3", "optim.warmup_steps=5",
                   "task.eval_steps=3", "data.cache=false"],
    }  # fmt: skip
    # two jobs at a time from two driver threads, as the demo runs them: stage 1 beside stage A, then the
    # stages that load stage 1's encoder; 4 workers × 0.45 CPU leave the 2-CPU Ray room for the read tasks
    summaries = {}
    for wave in WAVES:
        with ThreadPoolExecutor(len(wave)) as pool:
            runs = {s: pool.submit(run, job(s, tmp_path, synthtalk_shards, *plans[s],
                                            f"scaling.cpus_per_worker={PAIRED_WORKER_CPUS}")) for s in wave}  # fmt: skip
            summaries |= {s: r.result() for s, r in runs.items()}
    # each driver lists the shards it reads once, for its checks and its dataset alike
    assert sorted(listings) == sorted([(synthtalk_shards, "images")] * 2 + [(synthtalk_shards, "clips")] * 2)
    client = MlflowClient(uri)
    for stage, overrides in plans.items():
        summary = summaries[stage]
        steps = int(next(o for o in overrides if o.startswith("steps="))[6:])
        assert summary["steps"] == steps and summary["metrics"]["resumed_from"] == ""
        losses = loss_history(uri, summary["mlflow_run_id"])
        assert len(losses) == steps and np.mean(losses[-5:]) < np.mean(losses[:5]), (stage, losses)
        r = client.get_run(summary["mlflow_run_id"])
        assert r.info.status == "FINISHED" and r.data.params["stage"] == stage
        assert r.data.params["deepspeed"].endswith("zero2.json") and "system.torch" in r.data.params
        assert {"loss", "lr", "samples_per_second"} <= set(r.data.metrics)
        final = [a.path for a in client.list_artifacts(r.info.run_id, "samples/final")]
        assert any(p.endswith(".png") for p in final), final
        versions = client.search_model_versions(f"name='fet-{stage}'")
        assert [v.run_id for v in versions] == [r.info.run_id]
        info = json.loads((tmp_path / stage / "training_run.json").read_text())
        assert info["mlflow_run_id"] == r.info.run_id and info["model_version"] == "1"
    m1 = client.get_run(json.loads((tmp_path / "stage1" / "training_run.json").read_text())["mlflow_run_id"])
    assert "val_reconstruction_psnr_db" in m1.data.metrics
    for later in ("stage2", "stage3"):  # each records the stage-1 encoder it was trained on, for the export
        lineage = json.loads((tmp_path / later / "lineage.json").read_text())
        assert lineage["semantic_encoder_sha256"] == encoder_digest(str(tmp_path / "stage1"))
    export_bundle.main(["--out", str(tmp_path / "bundle"), *[f"--{s}={tmp_path / s}" for s in plans]])
    bundle = load_bundle(str(tmp_path / "bundle"))
    assert set(bundle.info["runs"]) == {"stage1", "stage2", "audio", "stage3"}
    # the held-out AUROC of every classifier stage 2 scored travels in the bundle to the API
    scored = {k.removeprefix("val_auroc/"): v for k, v in summaries["stage2"]["metrics"].items()
              if k.startswith("val_auroc/")}  # fmt: skip
    assert scored and held_out_aurocs(bundle.info) == pytest.approx(scored)
    assert bundle.image_cfg.image_size == 32
    # the S3 secret key, in the drivers' and the workers' environment, is in no file of the bundle and in no
    # MLflow run's params or tags
    shared = {str(f): f.read_bytes().decode(errors="replace") for f in (tmp_path / "bundle").rglob("*") if f.is_file()}
    for stage, summary in summaries.items():
        r = client.get_run(summary["mlflow_run_id"])
        shared[stage] = json.dumps([r.data.params, r.data.tags])
    assert not [k for k, text in shared.items() if S3_SECRET in text]


def _no_secret_written(output, tracking_uri: str, run_id: str, folders: list[str]) -> None:
    """Neither the tracking server's password nor the S3 secret key is in the driver's output (``capsys``'s),
    what the workers printed, the MLflow run's params and tags, or any file under ``folders``; the password
    is in no log of this Ray either (the S3 key is: this test's Ray passes it to its workers in the runtime
    environment, which Ray logs). The workers did say that the server was away, naming it."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # this test's local Ray
    ray_logs = {f: f.read_text(errors="replace") for f in logs.rglob("*") if f.is_file()}
    printed = "".join(t for f, t in ray_logs.items() if f.name.startswith("worker-"))  # workers' stdout, stderr
    assert "does not take the run's logs" in printed
    run = MlflowClient(tracking_uri).get_run(run_id)
    written = {f: storage.read_bytes(f).decode(errors="replace") for d in folders for f in storage.list_files(d)}
    assert not [f for f, text in ray_logs.items() if PASSWORD in text]
    for secret in (PASSWORD, S3_SECRET):
        assert secret not in output.out + output.err + printed
        assert secret not in json.dumps([run.data.params, run.data.tags])
        assert not [f for f, text in written.items() if secret in text]


def _registered_checkpoint_step(prefix: str) -> int | None:
    """The step of the latest checkpoint Ray Train has registered for the run at ``prefix``, or None.

    A worker's checkpoint files reach storage before the controller registers the checkpoint, and a worker
    group restarted in between starts from nothing; the controller writes this snapshot as it registers one.
    """
    snapshot = prefix + "checkpoint_manager_snapshot.json"
    if not storage.exists(snapshot):
        return None
    latest = json.loads(storage.read_text(snapshot)).get("latest_checkpoint_result")
    return int(latest["metrics"]["step"]) if latest else None


def _kill_a_worker_after_first_checkpoint(cfg: TrainJobConfig, prefix: str, killed: list, then=None) -> None:
    """SIGKILL one training worker once Ray Train has registered a checkpoint and rank 0 has logged a few
    steps past it; then call ``then`` with the step of that checkpoint."""
    deadline = time.time() + 400
    while time.time() < deadline:
        time.sleep(0.2)
        run_id = tracking.find_run(cfg.mlflow.tracking_uri, cfg.mlflow.experiment, cfg.name)
        checkpoint_step = _registered_checkpoint_step(prefix) if run_id else None
        if checkpoint_step is None:
            continue
        history = MlflowClient(cfg.mlflow.tracking_uri).get_metric_history(run_id, "loss")
        logged = max((m.step for m in history), default=0)
        if logged < checkpoint_step + 5:
            continue
        # only this test's Ray: `ray.init()` started its raylet as a child of this process, and the
        # raylet starts the workers, so another Ray on the machine (a benchmark) is never touched
        for p in psutil.Process().children(recursive=True):
            try:
                cmd, born, status = " ".join(p.cmdline()), p.create_time(), p.status()
            except psutil.NoSuchProcess:
                continue
            if cmd.startswith("ray::RayTrainWorker") and status != psutil.STATUS_ZOMBIE:
                p.send_signal(signal.SIGKILL)
                # what was killed, and when, for a failure message
                killed.append(f"pid {p.pid} ({cmd.split()[0]}, started {time.time() - born:.0f} s before), with "
                              f"checkpoint {checkpoint_step} registered and loss logged to step {logged}")  # fmt: skip
                if then is not None:
                    then(checkpoint_step)
                return


def test_a_diverged_run_ends_at_once_with_its_reason_and_is_not_restarted(
    local_ray, synthtalk_shards, tmp_path, capsys
):
    """A learning rate that drives the loss to NaN: the job ends (exit 2) with the step and what to change,
    without a traceback and without Ray Train restarting the workers from their checkpoint (they would
    diverge again at the same step, ``checkpoint.max_failures`` times). The MLflow run is FAILED and says why."""
    db = tmp_path / "mlflow.db"
    with pytest.raises(SystemExit) as done:
        train.main(["--config", "configs/train/ray/stage1_tiny.yaml", f"data.shards={synthtalk_shards}",
                    f"storage_path={tmp_path / 'ray'}", f"out={tmp_path / 'out'}", f"mlflow.tracking_uri=sqlite:///{db}",
                    "name=stage1-diverges", "steps=20", "optim.lr=1e6", "optim.warmup_steps=1", "checkpoint.every=1",
                    "checkpoint.max_failures=2", "mlflow.sample_every=0", "task.eval_steps=2"])  # fmt: skip
    err = capsys.readouterr().err
    assert done.value.code == 2, err[-3000:]
    line = next(x for x in err.splitlines() if x.startswith("error: "))
    assert "[stage1-diverges] training diverged: the loss is nan at step " in line, line
    assert "Lower optim.lr (1000000.0)" in line
    run_id = tracking.find_run(f"sqlite:///{db}", "faceedittalker", "stage1-diverges")
    mlflow_run = MlflowClient(f"sqlite:///{db}").get_run(run_id)
    assert mlflow_run.info.status == "FAILED" and "training diverged" in mlflow_run.data.tags["fet.diverged"]
    assert "fet.resumed_from" not in mlflow_run.data.tags  # no restart from the checkpoints of steps before it
    assert not (tmp_path / "out").exists()


def test_killed_worker_resumes_from_s3_checkpoint_with_exact_steps(
    local_ray, synthtalk_shards, s3_bucket, mlflow_server, tmp_path, capsys
):
    """A worker killed mid-run, and the tracking server down while the run resumes: the run ends with
    exactly its steps, and every step's loss reaches the one MLflow run once the server is back. A second
    driver of the run, while it trains, is refused. The tracking URI carries a password, as a server behind
    basic authentication is given: it reaches neither the logs nor the params, nor any file the run writes."""
    uri = mlflow_server.uri.replace("://", f"://fet:{PASSWORD}@")
    cfg = job("stage1", tmp_path, synthtalk_shards, "name=stage1-kill", f"storage_path={s3_bucket}/ray",
              "steps=40", "task.eval_steps=3", "optim.warmup_steps=5", f"mlflow.tracking_uri={uri}")  # fmt: skip

    def server_away_until_the_next_checkpoint(killed_at: int) -> None:
        """The resumed rank 0 logs (every 5 steps) into a server that is not there until the resumed run
        has registered its next checkpoint (every 10 steps)."""
        try:
            run(job("stage1", tmp_path, synthtalk_shards, "name=stage1-kill", f"storage_path={s3_bucket}/ray",
                    "steps=40"))  # fmt: skip
        except RunHeldError as e:
            second_driver.append(str(e))
        mlflow_server.stop()
        deadline = time.time() + 400
        while (_registered_checkpoint_step(f"{s3_bucket}/ray/stage1-kill/") or 0) <= killed_at:
            assert time.time() < deadline, "the resumed run registered no checkpoint"
            time.sleep(0.5)
        outage.append(killed_at)
        mlflow_server.start()

    killed: list[str] = []
    outage: list[int] = []
    second_driver: list[str] = []
    watcher = threading.Thread(target=_kill_a_worker_after_first_checkpoint, daemon=True,
                               args=(cfg, f"{s3_bucket}/ray/stage1-kill/", killed, server_away_until_the_next_checkpoint))  # fmt: skip
    watcher.start()
    summary = run(cfg)
    watcher.join(timeout=60)
    assert killed and outage, ("no Ray Train worker was found to kill", killed, outage)
    assert len(second_driver) == 1 and "another driver is training this run" in second_driver[0], second_driver
    assert not storage.exists(f"{s3_bucket}/ray/stage1-kill/{LEASE}")  # let go when the run ended
    assert summary["steps"] == 40 and summary["metrics"]["resumed_from"] != "", (killed, summary["metrics"])
    assert summary["checkpoint"].startswith(f"{s3_bucket}/ray/stage1-kill/checkpoint_")
    state = json.loads(storage.read_text(storage.join(summary["checkpoint"], "state.json")))
    per_rank = len(list(read_rows(synthtalk_shards, "images", "train", ["image_id", "split"]))) // 2 // cfg.batch_size
    assert (state["step"], state["epoch"], state["batch"]) == (40, 39 // per_rank, 39 % per_rank + 1)
    run_id = tracking.find_run(uri, cfg.mlflow.experiment, "stage1-kill")
    assert run_id == summary["mlflow_run_id"]
    steps = {m.step for m in MlflowClient(uri).get_metric_history(run_id, "loss")}
    assert steps == set(range(1, 41))  # one MLflow run across the restart, every step logged
    assert json.loads(storage.read_text(f"{cfg.out}/training_run.json"))["mlflow_unsent"] == 0
    _no_secret_written(capsys.readouterr(), uri, run_id, [cfg.out, f"{s3_bucket}/ray/stage1-kill"])

    again = run(job("stage1", tmp_path, synthtalk_shards, "name=stage1-kill", f"storage_path={s3_bucket}/ray",
                    "steps=40", f"mlflow.tracking_uri={uri}"))  # fmt: skip
    assert again["already_complete"] and again["mlflow_run_id"] == run_id
    capsys.readouterr()
    # other data under the finished run's name: not trained, and the data it was trained on is named
    run(job("stage1", tmp_path, str(tmp_path / "other"), "name=stage1-kill", f"storage_path={s3_bucket}/ray",
            "steps=40", f"mlflow.tracking_uri={uri}"))  # fmt: skip
    assert (f"it was trained with data.shards {synthtalk_shards}, not {tmp_path / 'other'} as this submission asks"
            in capsys.readouterr().out)  # fmt: skip
    exp = MlflowClient(uri).get_experiment_by_name(cfg.mlflow.experiment)
    assert len(MlflowClient(uri).search_runs([exp.experiment_id])) == 1
