"""A Ray head on this machine for the demo and the tests: ``ray start --head`` in its own temp dir,
stopped by killing only the processes of that temp dir (``ray stop`` would stop every Ray here)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
QUIET = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2", "RAY_DEDUP_LOGS": "1"}


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: each socket stays bound until all are chosen, since a port probed and
    released may be handed out again by the next probe (two of a head's components then collide)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


@dataclass
class LocalHead:
    temp: Path
    address: str  # job submission / dashboard address
    gcs: str  # ray://-less GCS address for `ray.init(address=...)` and `serve`
    env: dict[str, str]

    def stop(self, grace: float = 3.0) -> None:
        """Stop every process of this head: those naming its temp dir or its GCS address (the Ray client
        server), and all their descendants (the dashboard and runtime-env agents rename themselves and
        would outlive the raylet as orphans). SIGTERM, then SIGKILL for what is left after ``grace``
        seconds: the GCS, the raylet and Serve's actors outlive a SIGTERM by 15 s or more, and a head of
        this machine keeps nothing that needs an orderly exit (its GCS state is in memory)."""
        import psutil

        gcs_port = ":" + self.gcs.rsplit(":", 1)[1]
        procs: dict[int, psutil.Process] = {}
        for p in psutil.process_iter(["cmdline"]):
            try:
                args = p.info["cmdline"] or []
                if str(self.temp) in " ".join(args) or any(
                    a.startswith("--address=") and a.endswith(gcs_port) for a in args
                ):
                    procs[p.pid] = p
                    procs.update((c.pid, c) for c in p.children(recursive=True))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        procs.pop(os.getpid(), None)
        procs = list(procs.values())
        for p in procs:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:  # it exited between the wait and the kill
                continue
        # gone (or a zombie its parent has yet to reap) when this returns: on a busy machine a killed process
        # can run on for a moment before it dies
        deadline = time.time() + 10
        while any(_running(p) for p in alive) and time.time() < deadline:
            time.sleep(0.1)


def _running(p) -> bool:
    import psutil

    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start_head(num_cpus: int = 2, temp: Path | None = None) -> LocalHead:
    """Start a head on 127.0.0.1 with the dashboard (job submission) on a free port."""
    temp = temp or Path(tempfile.mkdtemp(prefix="fet-ray-"))  # short: Ray's socket paths have a length limit
    # every fixed default port of a node moved to a free one, so a second Ray on this machine (a test, a
    # benchmark) does not take the job agent's port and leave the head unable to accept jobs
    names = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "ray-client-server-port")  # fmt: skip
    port, dash, *others = free_ports(2 + len(names))
    agent = [f"--{name}={p}" for name, p in zip(names, others)]
    # its processes' own temporary files (the dashboard's forkserver socket, jobs' temporary folders) go
    # into its temp dir too, which is deleted with the head: a killed process leaves nothing in /tmp
    (temp / "tmp").mkdir(parents=True, exist_ok=True)
    env = os.environ | QUIET | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled",
                                "TMPDIR": str(temp / "tmp")}  # fmt: skip
    cmd = [str(BIN / "ray"), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
           f"--num-cpus={num_cpus}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", f"--temp-dir={temp}", "--disable-usage-stats", *agent]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        raise RuntimeError(f"ray start failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    head = LocalHead(temp, f"http://127.0.0.1:{dash}", f"127.0.0.1:{port}", env)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", dash)) == 0:
                return head
        time.sleep(0.5)
    head.stop()
    raise RuntimeError("the Ray dashboard did not come up within 60 s")
