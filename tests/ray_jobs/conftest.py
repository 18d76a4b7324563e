"""Ray for the job tests: a real local Ray per module (2 CPUs), with the S3 test server's credentials
passed to its workers, and a real `ray start --head` for `ray job submit`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A real Ray head (`ray start --head`) on 127.0.0.1; yields the job-submission address."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    temp = tmp_path_factory.mktemp("rayhead")
    port, dash = _free_port(), _free_port()
    env = os.environ | QUIET | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    start = [str(BIN / "ray"), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
             "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash}", f"--temp-dir={temp}", "--disable-usage-stats"]  # fmt: skip
    out = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        pytest.fail(f"ray start failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", dash)) == 0:
                break
        time.sleep(0.5)
    yield address, env
    _stop_processes_under(temp)
    shutil.rmtree(temp, ignore_errors=True)


def _stop_processes_under(temp: Path) -> None:
    """Stop this head's processes only (``ray stop`` would stop every Ray on the machine)."""
    import psutil

    procs = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(temp) in " ".join(p.info["cmdline"] or []):
                procs.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for p in procs:
        p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        p.kill()
