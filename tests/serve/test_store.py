"""The replicas' shared store: a job unchanged for longer than its time to live is deleted with its
result, and a reference unused for longer than its own, on local disk and on S3 (SeaweedFS), while newer
ones stay."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from fet import storage
from serve.store import StateStore
from tests.conftest import point_s3_at_nothing


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    return str(tmp_path / "state") if request.param == "local" else request.getfixturevalue("s3_bucket") + "/state"


def test_expired_jobs_are_deleted_with_their_results(root):
    store = StateStore(root)
    assert store.expire_jobs(60) == []  # no job yet
    old, running = (store.new_job({"reference_id": "r"}) for _ in range(2))
    store.put_result(old["id"], b"mp4 bytes")
    time.sleep(3.2)  # S3 keeps whole seconds
    store.save_job(running | {"progress": 0.5})  # a running job changes with its progress
    fresh = store.new_job({"reference_id": "r"})
    assert store.expire_jobs(2.0) == [old["id"]]
    assert store.job(old["id"]) is None
    with pytest.raises(storage.StorageError):
        store.result(old["id"])
    assert store.job(running["id"])["progress"] == 0.5 and store.job(fresh["id"]) is not None
    assert storage.list_files(storage.join(root, "jobs")) == sorted(
        storage.join(root, "jobs", j["id"], "state.json") for j in (running, fresh)
    )
    if not storage.is_s3(root):  # the job's folder goes too
        assert sorted(p.name for p in (Path(root) / "jobs").iterdir()) == sorted([running["id"], fresh["id"]])


def test_references_unused_for_their_time_to_live_are_deleted(root):
    store = StateStore(root)
    assert store.expire_references(60) == []  # no reference yet
    for ref_id in ("a" * 32, "b" * 32):
        store.put_reference(ref_id, b"x_T and z_sem")
    with pytest.raises(storage.StorageError, match="c{32}"):
        store.touch_reference("c" * 32)
    assert not store.use_reference("c" * 32)
    time.sleep(3.2)  # S3 keeps whole seconds
    assert store.use_reference("b" * 32)  # used again: kept
    assert store.expire_references(2.0) == ["a" * 32]
    assert not store.has_reference("a" * 32)
    assert store.get_reference("b" * 32) == b"x_T and z_sem"  # a touch leaves the bytes as they were
    assert store.expire_references(2.0) == []


def test_of_replicas_racing_to_run_a_silent_job_again_exactly_one_claims_each_run(root):
    """Eight pollers at once, as replicas that all find the job silent: one claim per run succeeds, on disk
    (O_EXCL) and on S3 (If-None-Match), and the claims go with the job when it expires."""
    from concurrent.futures import ThreadPoolExecutor

    store = StateStore(root)
    job = store.new_job({"reference_id": "r"})
    with ThreadPoolExecutor(8) as pool:
        for attempt in (2, 3):
            won = list(pool.map(store.claim_run, [job["id"]] * 8, [attempt] * 8))
            assert won.count(True) == 1, (attempt, won)
    assert not store.claim_run(job["id"], 2)  # a late poller too
    time.sleep(3.2)  # S3 keeps whole seconds
    assert store.expire_jobs(2.0) == [job["id"]]
    assert storage.list_files(storage.join(root, "jobs")) == []


def test_a_run_taken_over_by_a_later_one_can_no_longer_write_the_jobs_state(root):
    """The replica of run 1 comes back after run 2 was claimed: its write is refused and the state stays
    run 2's, on disk and on S3."""
    from serve.store import RunStoppedError

    store = StateStore(root)
    first = store.new_job({"reference_id": "r", "attempts": 1})
    assert store.stopped(first) is None
    assert store.claim_run(first["id"], 2)
    second = dict(first, attempts=2, state="queued")
    store.save_job(second)
    with pytest.raises(RunStoppedError, match="run 1 was taken over"):
        store.save_job(dict(first, state="running", progress=0.5))
    assert store.job(first["id"])["attempts"] == 2 and store.stopped(first) and not store.stopped(second)


def test_a_cancelled_job_refuses_its_runs_writes_and_a_deleted_one_is_gone(root):
    from serve.store import RunStoppedError

    store = StateStore(root)
    job = store.new_job({"reference_id": "r", "attempts": 1})
    store.put_speech(job["id"], np.zeros(16000, np.float32))
    running = dict(job, state="running", progress=0.5)
    store.cancel(dict(job))
    assert store.cancelled(job["id"]) and store.job(job["id"])["state"] == "cancelled"
    with pytest.raises(RunStoppedError, match="run 1 was cancelled"):
        store.save_job(running)
    assert store.job(job["id"])["state"] == "cancelled"
    store.delete_job(job["id"])
    assert store.job(job["id"]) is None and storage.list_files(storage.join(root, "jobs")) == []


def test_a_store_that_cannot_be_reached_raises_instead_of_answering_no_such_job(s3_bucket, monkeypatch):
    """With the S3 server gone, asking for a job or a reference is a ``StorageError`` (the service answers
    503, retry), not None or False (404: "unknown or expired", and the client gives up)."""
    store = StateStore(s3_bucket + "/state")
    job = store.new_job({"reference_id": "r"})
    assert store.job(job["id"]) == job and store.job("f" * 32) is None and not store.use_reference("r" * 32)
    point_s3_at_nothing(monkeypatch)
    for call, arg in ((store.job, job["id"]), (store.speech, job["id"]), (store.use_reference, "r" * 32)):
        with pytest.raises(storage.StorageError, match="Could not connect"):
            call(arg)


@pytest.mark.parametrize("where", ["s3", "disk"])
def test_a_replica_whose_clock_is_off_by_hours_judges_ages_by_the_storages_clock(where, tmp_path, request, monkeypatch):
    """A replica on a node whose clock runs two hours ahead (here: this process's ``time.time``) sweeps
    the shared store: fresh jobs and references stay, a job just written is not silent and a run just
    claimed is recent. Before, the sweep deleted everything younger than two hours' worth of TTL; on a
    shared file system (NFS) it still did, until local ages were read against a file made beside them."""
    root = request.getfixturevalue("s3_bucket") if where == "s3" else str(tmp_path)
    store = StateStore(root + "/state")
    job = store.new_job({"reference_id": "r"})
    store.put_reference("a" * 32, b"x_T and z_sem")
    assert store.claim_run(job["id"], 2)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 7200)
    assert store.expire_jobs(3600) == [] and store.expire_references(3600) == []
    assert store.job(job["id"]) is not None and store.has_reference("a" * 32)
    assert store.silent(job["id"]) < 60 and store.claim_age(job["id"], 2) < 60
    assert store.silent("f" * 32) is None and store.claim_age(job["id"], 3) is None
