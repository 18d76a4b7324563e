"""A training run's MLflow logging against a real tracking server that stops and starts again: nothing
raises, nothing waits minutes, and what was logged meanwhile reaches the run when the server is back."""

from __future__ import annotations

import time

from mlflow import MlflowClient

from ray_jobs.run_logger import RunLogger
from ray_jobs.tracking import new_run

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def _timed(call) -> tuple[object, float]:
    t0 = time.monotonic()
    return call(), time.monotonic() - t0


def test_logs_wait_through_a_server_restart_and_reach_the_run(mlflow_server, tmp_path, capsys):
    uri = mlflow_server.uri
    run_id = new_run(uri, "faceedittalker", "through-a-restart", {"steps": 4}, {})
    logger = RunLogger(uri, run_id, retry_seconds=1.0)
    logger.metrics({"loss": 1.0}, 1)
    assert logger.flush() and logger.unsent == 0

    mlflow_server.stop()
    for step in (2, 3, 4):
        logger.metrics({"loss": float(step)}, step)
        sent, seconds = _timed(logger.flush)
        # MLflow's client alone retries a refused request for about 4 minutes before raising
        assert not sent and seconds < 30, seconds
        time.sleep(1.1)
    logger.image(PNG, "samples.png", step=3)
    logger.tag("fet.resumed_from", "2")
    assert logger.unsent == 5  # 3 metrics, an upload and a tag, in order
    out = capsys.readouterr().out
    assert out.count("does not take the run's logs") == 1 and "training goes on" in out

    mlflow_server.start()
    component = tmp_path / "component"
    component.mkdir()
    (component / "weights.safetensors").write_bytes(b"w" * 64)
    assert logger.component(str(component), "fet-test", wait=60) == "1"
    assert logger.close(wait=10) == 0 and "answers again" in capsys.readouterr().out
    client = MlflowClient(uri)
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))
    assert history == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    run = client.get_run(run_id)
    assert run.data.tags["fet.resumed_from"] == "2"
    assert [a.path for a in client.list_artifacts(run_id, "samples/step_000003")] == ["samples/step_000003/samples.png"]
    assert [a.path for a in client.list_artifacts(run_id, "component")] == ["component/weights.safetensors"]
    assert RunLogger(uri, run_id).component(str(component), "fet-test", wait=10) == "2"  # the model exists: a version

    logger.tag("note?", "x")  # a key MLflow refuses: dropped, and it does not hold back what follows
    logger.metrics({"loss": 4.5}, 5)
    assert logger.flush() and "MLflow refused tag note?" in capsys.readouterr().out
    assert (5, 4.5) in [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")]

    mlflow_server.stop()  # and does not come back: the end of the job waits a bounded time, then says so
    logger.metrics({"loss": 5.0}, 6)
    unsent, seconds = _timed(lambda: logger.close(wait=3))
    assert unsent == 1 and seconds < 60
    assert "1 logged items of run" in capsys.readouterr().out
