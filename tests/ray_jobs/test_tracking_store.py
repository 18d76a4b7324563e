"""Jobs started together on a new SQLite MLflow store (the demo's training waves) all open it: the schema
is created once, under a lock, instead of by every process at the same time."""

from __future__ import annotations

import multiprocessing as mp

from ray_jobs.tracking import find_run, new_run


def _open(uri: str, barrier, results) -> None:
    barrier.wait()  # every process reaches the new store at the same moment
    try:
        find_run(uri, "faceedittalker", "nothing-yet")
        results.put("ok")
    except Exception as e:  # reported to the test, which names it
        results.put(f"{type(e).__name__}: {e}"[:300])


def test_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(uri, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    outcomes = [results.get(timeout=5) for _ in procs]
    assert outcomes == ["ok"] * 4, outcomes
    run_id = new_run(uri, "faceedittalker", "after", {"a": 1}, {})
    assert find_run(uri, "faceedittalker", "after") == run_id
