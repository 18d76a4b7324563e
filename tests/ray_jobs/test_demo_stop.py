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


def _demo(tmp_path: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ray_jobs.demo", "--out", str(tmp_path / "demo"), *args]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ | {"RAY_ADDRESS": ""})  # fmt: skip


def _heads() -> set[Path]:
    """The temporary folders of the local Ray heads on this machine (``LocalHead.temp``)."""
    return set(Path(tempfile.gettempdir()).glob("fet-ray-*"))


def _new_heads(before: set[Path]) -> list[Path]:
    return sorted(_heads() - before)


def _end(demo: subprocess.Popen) -> None:
    """After a failed assertion: SIGTERM first, so that a head the demo started is stopped with it."""
    if demo.poll() is None:
        demo.terminate()
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()


@pytest.mark.slow
def test_sigterm_stops_the_head_and_its_jobs(tmp_path):
    """SIGTERM while the preprocessing job runs: the demo exits at once with 143, and nothing of its head is
    left. Until then the head answers."""
    before = _heads()
    demo = _demo(tmp_path, "--images", "400", "--clips", "10")
    lines: list[str] = []
    try:
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("[3/9] ray job submit: preprocessing"):
                break
        dashboard = next((ln.split()[1] for ln in lines if ln.strip().startswith("dashboard http")), None)
        assert dashboard and lines[-1].startswith("[3/9]"), "".join(lines[-40:])
        heads = [str(p) for p in _new_heads(before)]
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
        _end(demo)
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


def test_sigterm_while_synthtalk_draws_ends_its_pool_workers_too(tmp_path):
    """SynthTalk draws the world before the head starts. SIGTERM then ends the pool's workers too, and the
    demo exits with 143 and says so; without a handler it died at once and its workers on a broken pipe."""
    before = _heads()
    demo = _demo(tmp_path, "--images", "3000", "--clips", "40")
    try:
        first = next(line for line in demo.stdout if line.startswith("[1/9]"))
        assert first.startswith("[1/9] SynthTalk"), first  # before the head starts
        deadline = time.time() + 60
        while len(workers := psutil.Process(demo.pid).children(recursive=True)) < 2 and time.time() < deadline:
            time.sleep(0.2)
        assert len(workers) >= 2, workers  # the pool is drawing
        demo.send_signal(signal.SIGTERM)
        rest = demo.communicate(timeout=30)[0]
    finally:
        _end(demo)
    assert demo.returncode == 128 + signal.SIGTERM, (demo.returncode, rest[-3000:])
    assert "stopped by SIGTERM: before the Ray head started" in rest, rest[-3000:]
    time.sleep(1)
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    assert not _new_heads(before)


def test_a_world_too_small_is_named_with_what_it_lacks_before_the_head_starts(tmp_path):
    """(The SIGTERM test's world, 400 faces and 10 clips, is one the demo takes: it reaches preprocessing.)"""
    before = _heads()
    demo = _demo(tmp_path, "--images", "40", "--clips", "1", "--eval-clips", "3")
    out = demo.communicate(timeout=120)[0]
    assert demo.returncode == 2 and "drew a world too small for the demo" in out, out[-3000:]
    assert "training clip(s); the two training workers need at least 2" in out, out[-3000:]
    assert "test clip(s); the evaluation needs 3" in out, out[-3000:]
    assert "no held-out face with {'Brown_Hair': 1" in out, out[-3000:]
    assert "dashboard http" not in out and not _new_heads(before), out[-3000:]  # no head was started


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
