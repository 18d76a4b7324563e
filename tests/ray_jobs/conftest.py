"""Ray for the job tests: a real local Ray (2 CPUs), shared by the modules that follow one another, with the S3
test server's credentials passed to its workers, and a real `ray start --head` for `ray job submit`."""

from __future__ import annotations

import os
import re
import shutil

import pytest

AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
QUIET = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2", "RAY_DEDUP_LOGS": "1"}
_STARTED: dict[str, str] = {}  # the GCS address of the Ray that local_ray started


@pytest.fixture(scope="session")
def _local_ray_session():
    """Shuts down, at the end of the session, a local Ray that ``local_ray`` left running."""
    yield
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def local_ray(s3_server, _local_ray_session):
    """``ray.init()`` on this machine; workers see the SeaweedFS endpoint and keys. One Ray serves the modules
    that follow one another (starting one takes seconds); a module that starts another Ray (the `ray start`
    head) shuts this one down, and the next module that asks for it starts it again."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized() and ray.get_runtime_context().gcs_address != _STARTED.get("gcs"):
        ray.shutdown()  # a Ray that a job's own entry point started, without the test server's keys
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in AWS_VARS if k in os.environ} | QUIET
        info = ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
        _STARTED["gcs"] = info.address_info["gcs_address"]
    yield ray


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
    ours, gcs_port = {c.pid for c in psutil.Process().children(recursive=True)}, ":" + head.gcs.rsplit(":", 1)[1]
    left = []
    for p in psutil.process_iter(["cmdline", "status", "ppid"]):
        if p.pid in before or p.pid in ours or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        args = p.info["cmdline"] or []
        cmd = " ".join(args)
        if "ray" not in cmd:
            continue
        named = str(head.temp) in cmd or any(a.startswith("--address=") and a.endswith(gcs_port) for a in args)
        # an orphan naming no other Ray session: a renamed agent of this head that outlived its raylet
        # (another Ray started meanwhile on this machine, a test run or a demo beside this one, is not this head's)
        stray = p.info["ppid"] == 1 and not re.search(r"session_\d{4}-\d\d-\d\d", cmd)
        if named or stray:
            left.append(cmd[:80])
    assert not left, f"processes of the stopped Ray head still running: {left}"
