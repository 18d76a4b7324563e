"""The replicas' shared store: a job unchanged for longer than its time to live is deleted with its
result, on local disk and on S3 (SeaweedFS), while newer jobs stay."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fet import storage
from serve.store import StateStore


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    return str(tmp_path / "state") if request.param == "local" else request.getfixturevalue("s3_bucket") + "/state"


def test_expired_jobs_are_deleted_with_their_results(root):
    store = StateStore(root)
    assert store.expire_jobs(60) == []  # no job yet
    old, running, fresh = (store.new_job({"reference_id": "r"}) for _ in range(3))
    store.put_result(old["id"], b"mp4 bytes")
    for job in (old, running):  # last changed two minutes ago
        uri = storage.join(root, "jobs", job["id"], "state.json")
        storage.write_text(uri, json.dumps(job | {"updated": time.time() - 120}))
    store.save_job(running | {"progress": 0.5})  # a running job changes with its progress
    assert store.expire_jobs(60) == [old["id"]]
    assert store.job(old["id"]) is None
    with pytest.raises(storage.StorageError):
        store.result(old["id"])
    assert store.job(running["id"])["progress"] == 0.5 and store.job(fresh["id"]) is not None
    assert storage.list_files(storage.join(root, "jobs")) == sorted(
        storage.join(root, "jobs", j["id"], "state.json") for j in (running, fresh)
    )
    if not storage.is_s3(root):  # the job's folder goes too
        assert sorted(p.name for p in (Path(root) / "jobs").iterdir()) == sorted([running["id"], fresh["id"]])
