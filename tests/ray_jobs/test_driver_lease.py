"""One driver at a time trains a run: the lease beside its checkpoints, on disk and on S3 (SeaweedFS),
held by real processes, one of them killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from fet import storage
from ray_jobs import train
from ray_jobs.driver_lease import LEASE, DriverLease, RunHeldError, hold

HOLDER = """
import sys, time
from ray_jobs.driver_lease import DriverLease
DriverLease(sys.argv[1], stale_seconds=5, renew_seconds=0.2).acquire()
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture(params=["disk", "s3"])
def run_dir(request, tmp_path) -> str:
    if request.param == "disk":
        return str(tmp_path / "ray" / "stage1-tiny")
    return f"{request.getfixturevalue('s3_bucket')}/ray/stage1-tiny"


def test_a_second_driver_is_refused_and_named_the_holder_until_the_first_lets_go(run_dir):
    first = DriverLease(run_dir)
    first.acquire()  # its lease was written just now: the refusal says 0 s ago, or 1 once the S3 reads take over 0.5 s
    lease = storage.join(run_dir, LEASE)
    assert json.loads(storage.read_text(lease))["pid"] == os.getpid()
    with pytest.raises(RunHeldError, match=f"another driver is training this run \\(pid {os.getpid()} on "
                                           f"{socket.gethostname()}, since .*renewed its lease [01] s ago"):  # fmt: skip
        DriverLease(run_dir).acquire()
    first.release()
    assert not storage.exists(lease)
    second = DriverLease(run_dir)
    second.acquire()
    assert json.loads(storage.read_text(lease))["token"] == second.holder["token"]
    second.release()


def test_a_driver_killed_holding_the_run_lets_go_once_its_lease_lapses(run_dir, capsys):
    """Refused while the holder renews and right after it is killed; once a renewal is missed (a retry
    after the driver died), the next driver waits for the lease to lapse and takes the run over."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, run_dir], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        time.sleep(1.5)  # renewed meanwhile (every 0.2 s): its age stays under the 1.4 s that make a renewal missed
        with pytest.raises(RunHeldError, match=f"pid {proc.pid} on"):
            DriverLease(run_dir, stale_seconds=5, renew_seconds=0.2).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with pytest.raises(RunHeldError):  # just killed: not yet known to be gone
        DriverLease(run_dir, stale_seconds=5, renew_seconds=0.2).acquire()
    time.sleep(2.0)  # a renewal missed, the lease not yet lapsed (S3 keeps times to the second)
    taker = DriverLease(run_dir, stale_seconds=5, renew_seconds=0.2)
    taker.acquire()
    out = capsys.readouterr().out
    assert "waiting" in out and "took the run over from a driver that stopped renewing its lease" in out, out
    assert json.loads(storage.read_text(storage.join(run_dir, LEASE)))["token"] == taker.holder["token"]
    taker.release()


def test_a_held_lease_is_renewed_and_a_lost_one_is_left_to_its_new_holder(tmp_path):
    run_dir = str(tmp_path / "run")
    lease = DriverLease(run_dir, renew_seconds=0.05)
    lease.acquire()
    path = tmp_path / "run" / LEASE
    os.utime(path, (time.time() - 60, time.time() - 60))
    time.sleep(0.5)
    assert storage.age(path) < 5  # touched again by the renewal
    path.write_text(json.dumps({"token": "other", "pid": 1, "host": "elsewhere"}))  # taken over meanwhile
    lease.release()
    assert json.loads(path.read_text())["token"] == "other"


def test_one_thread_holds_its_run_again_another_thread_is_refused(tmp_path):
    run_dir = str(tmp_path / "run")
    refused: list[BaseException] = []

    def other_thread() -> None:
        try:
            with hold(run_dir):
                pass
        except RunHeldError as e:
            refused.append(e)

    with hold(run_dir) as outer, hold(run_dir) as inner:  # the job's main, then the run inside it
        assert inner is outer
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert len(refused) == 1
    assert not (tmp_path / "run" / LEASE).exists()


def test_the_training_job_refuses_a_run_another_driver_trains_before_ray_starts(tmp_path, capsys):
    import ray

    storage_path = tmp_path / "ray"
    other = DriverLease(str(storage_path / "stage1-tiny"))
    other.acquire()
    try:
        with pytest.raises(SystemExit) as exit_info:
            train.main(["--config", "configs/train/ray/stage1_tiny.yaml", f"storage_path={storage_path}",
                        f"data.shards={tmp_path / 'no-shards'}", f"out={tmp_path / 'stage1'}",
                        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"], stage="stage1")  # fmt: skip
    finally:
        other.release()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {storage_path / 'stage1-tiny'}: another driver is training this run (pid {os.getpid()}" in err
    assert not ray.is_initialized()


def test_a_finished_run_is_reported_without_its_lease(tmp_path):
    """Reporting a finished run writes nothing (its storage may be read-only to this user) and is not
    refused by a driver that died holding the run after it had finished it."""
    from fet.config import load_config
    from fet.training.job_config import TrainJobConfig

    job = load_config(TrainJobConfig, "configs/train/ray/stage1_tiny.yaml", [
        f"storage_path={tmp_path}", f"out={tmp_path / 'out'}", f"data.shards={tmp_path / 'shards'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])  # fmt: skip
    run_dir = tmp_path / job.name
    run_dir.mkdir()
    (run_dir / train.COMPLETE).write_text(json.dumps({"steps": job.steps, "data": job.data.shards}))
    other = DriverLease(str(run_dir))
    other.acquire()
    try:
        result = train.run(job)
    finally:
        other.release()
    assert result["already_complete"] and result["steps"] == job.steps
