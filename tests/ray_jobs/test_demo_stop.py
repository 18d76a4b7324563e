"""`make demo` stopped from outside (`timeout`, a closed terminal, a cancelled CI job): its Ray head, the jobs
on it and the head's folder are gone when it exits; arguments it cannot use are refused before anything
starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import requests

from ray_jobs.demo import main

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


def _head_processes(temp: str) -> list[str]:
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and temp in " ".join(p.info["cmdline"] or []):
                found.append(" ".join(p.info["cmdline"])[:100])
        except psutil.Error:
            continue
    return found


def test_sigterm_stops_the_head_and_its_jobs(tmp_path):
    """SIGTERM while the preprocessing job runs: the demo exits at once with 143, and nothing of its head is
    left. Until then the head answers, though SynthTalk's pool has ended its forked workers with SIGTERM."""
    before = set(Path(tempfile.gettempdir()).glob("fet-ray-*"))
    cmd = [sys.executable, "-m", "ray_jobs.demo", "--out", str(tmp_path / "demo"), "--images", "400", "--clips", "10"]
    demo = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ | {"RAY_ADDRESS": ""})  # fmt: skip
    lines: list[str] = []
    try:
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("[3/9] ray job submit: preprocessing"):
                break
        dashboard = next((ln.split()[1] for ln in lines if ln.strip().startswith("dashboard http")), None)
        assert dashboard and lines[-1].startswith("[3/9]"), "".join(lines[-40:])
        heads = [str(p) for p in set(Path(tempfile.gettempdir()).glob("fet-ray-*")) - before]
        assert len(heads) == 1, heads
        time.sleep(2)  # the job is submitted; the head still answers
        assert requests.get(f"{dashboard}/api/version", timeout=10).ok
        children = psutil.Process(demo.pid).children(recursive=True)  # the `ray job submit` client
        assert children
        demo.send_signal(signal.SIGTERM)
        t0 = time.time()
        rest = demo.communicate(timeout=60)[0]
        seconds = time.time() - t0
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 128 + signal.SIGTERM and seconds < 30, (demo.returncode, seconds, rest[-3000:])
    assert "stopped by SIGTERM: the Ray head and its jobs are stopped" in rest, rest[-3000:]
    assert not _head_processes(heads[0]) and not Path(heads[0]).exists(), _head_processes(heads[0])
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps1", "0"], "--steps1 0: expected 1 or more"),
        (["--size", "8"], "--size 8: expected 16 or more"),
        (["--eval-clips", "-1"], "--eval-clips -1: expected 0"),
    ],
)
def test_arguments_it_cannot_use_are_refused_before_anything_starts(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--out", str(tmp_path / "demo"), *args])
    assert done.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_a_world_too_small_for_the_demo_is_named_with_what_it_lacks(tmp_path):
    """(The SIGTERM test's world, 400 faces and 10 clips, is one the demo takes: it reaches preprocessing.)"""
    from fet.data.synthtalk.__main__ import generate
    from ray_jobs.demo import world_shortfall

    generate(tmp_path / "world", images=40, clips=1, size=64, seconds=1.0, workers=1, progress=False)
    lacks = world_shortfall(tmp_path / "world", eval_clips=3)
    assert any(s.endswith("training clip(s); the two training workers need at least 2") for s in lacks), lacks
    assert any(s.endswith("test clip(s); the evaluation needs 3") for s in lacks), lacks
    assert any(s.startswith("no held-out face with {'Brown_Hair': 1") for s in lacks), lacks


def test_synthtalks_pool_ends_under_the_demos_signal_handlers(tmp_path):
    """The pool ends its forked workers with SIGTERM; a worker that had inherited the demo's handler and was
    blocked on the pool's queue never ran it, and `make demo` waited for ever after drawing its world."""
    script = f"""
import pathlib, sys
from fet.data.synthtalk.__main__ import generate
from ray_jobs.demo import stop_on_signals

class Head:
    def stop(self):
        print("head stopped", flush=True)

stop_on_signals(Head())
for i in range(3):
    generate(pathlib.Path({str(tmp_path)!r}) / str(i), images=24, clips=2, size=32, seconds=1.0, workers=2, progress=False)
print("drawn", flush=True)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "drawn", (out.stdout[-2000:], out.stderr[-2000:])
