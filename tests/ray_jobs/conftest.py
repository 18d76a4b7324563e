"""Ray for the job tests: a real local Ray per module (2 CPUs), with the S3 test server's credentials
passed to its workers, and a real `ray start --head` for `ray job submit`."""

from __future__ import annotations

import os
import shutil

import pytest

AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
QUIET = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2", "RAY_DEDUP_LOGS": "1"}


@pytest.fixture(scope="module")
def local_ray(s3_server):
    """``ray.init()`` on this machine; workers see the SeaweedFS endpoint and keys."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    env = {k: os.environ[k] for k in AWS_VARS if k in os.environ} | QUIET
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_head():
    """A real Ray head (`ray start --head`) on 127.0.0.1; yields the job-submission address and the
    environment for the `ray` CLI. Only this head's processes are stopped afterwards."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    import psutil

    from ray_jobs.local_cluster import start_head

    before = set(psutil.pids())
    head = start_head(num_cpus=2)
    yield head.address, head.env
    head.stop()
    shutil.rmtree(head.temp, ignore_errors=True)
    ours = {c.pid for c in psutil.Process().children(recursive=True)}
    left = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.pid in before or p.pid in ours or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if "ray" in " ".join(p.info["cmdline"] or []):
            left.append(" ".join(p.info["cmdline"])[:80])
    assert not left, f"processes of the stopped Ray head still running: {left}"
