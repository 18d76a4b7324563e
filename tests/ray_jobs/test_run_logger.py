"""A training run's MLflow logging against a real tracking server that stops and starts again: nothing
raises, nothing waits minutes, and what was logged meanwhile reaches the run when the server is back."""

from __future__ import annotations

import time

import pytest
from mlflow import MlflowClient

from ray_jobs.run_logger import RunLogger
from ray_jobs.tracking import new_run
from tests.conftest import unreachable_endpoint

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def _timed(call) -> tuple[object, float]:
    t0 = time.monotonic()
    return call(), time.monotonic() - t0


@pytest.mark.slow
def test_logs_wait_through_a_server_restart_and_reach_the_run(mlflow_server, tmp_path, capsys, monkeypatch):
    """Through a tracking URI with a password (a server behind basic authentication), which no line says."""
    from ray_jobs import run_logger

    password = "fet-test-password-8Wd2"
    uri = mlflow_server.uri.replace("://", f"://fet:{password}@")

    def said() -> str:
        out = capsys.readouterr().out
        assert password not in out, out
        return out

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
    monkeypatch.setattr(run_logger, "MAX_METRICS", 4)  # a long outage: what waits is thinned
    for step in range(5, 10):
        logger.metrics({"loss": float(step)}, step)
    assert logger.stride == 2 and logger.thinned == 4  # steps 3 and 5 left out of the queue, 7 and 9 on arrival
    logger.image(PNG, "samples.png", step=3)
    logger.tag("fet.resumed_from", "2")
    assert logger.unsent == 6  # 4 metrics, an upload and a tag, in order
    out = said()
    assert out.count("does not take the run's logs") == 1 and "training goes on" in out
    assert f"MLflow at {mlflow_server.uri} does not take" in out  # the server named, without its password

    mlflow_server.start()
    component = tmp_path / "component"
    component.mkdir()
    (component / "weights.safetensors").write_bytes(b"w" * 64)
    assert logger.component(str(component), "fet-test", wait=60) == "1"
    assert logger.close(wait=10) == 0 and "answers again" in said()
    client = MlflowClient(uri)
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))
    assert history == [(1, 1.0), (2, 2.0), (4, 4.0), (6, 6.0), (8, 8.0)]
    run = client.get_run(run_id)
    assert run.data.tags["fet.resumed_from"] == "2"
    assert [a.path for a in client.list_artifacts(run_id, "samples/step_000003")] == ["samples/step_000003/samples.png"]
    assert [a.path for a in client.list_artifacts(run_id, "component")] == ["component/weights.safetensors"]
    assert RunLogger(uri, run_id).component(str(component), "fet-test", wait=10) == "2"  # the model exists: a version

    logger.tag("note?", "x")  # a key MLflow refuses: dropped, and it does not hold back what follows
    logger.metrics({"loss": 4.5}, 11)  # every step again, now that the server answers
    assert logger.flush() and "MLflow refused tag note?" in said()
    assert (11, 4.5) in [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")]

    mlflow_server.stop()  # and does not come back: the end of the job waits a bounded time, then says so
    logger.metrics({"loss": 5.0}, 12)
    unsent, seconds = _timed(lambda: logger.close(wait=3))
    assert unsent == 1 and seconds < 60
    assert "1 logged items of run" in said()


def test_what_waits_for_a_server_that_stays_away_is_bounded_and_spans_the_whole_outage(monkeypatch, capsys):
    """Past its limit the logger keeps the per-step values at every other step, then every fourth, ...: the
    queue stays bounded through a long outage and still holds the whole curve, evenly; reports stay whole."""
    from ray_jobs import run_logger

    monkeypatch.setattr(run_logger, "MAX_METRICS", 100)
    logger = RunLogger(unreachable_endpoint(), "0" * 32)
    for step in range(1, 1001):
        logger.metrics({"loss": 1.0 / step, "lr": 0.1}, step)
        if step in (250, 500, 777, 1000):
            logger.metrics({"val_psnr_db": step / 100}, step, report=True)
        assert len(logger.metrics_queued) <= 101
    per_step = sorted({m.step for m in logger.metrics_queued if m.key == "loss"})
    assert logger.stride >= 16 and per_step == list(range(logger.stride, 1001, logger.stride))
    for step in per_step:  # a step is kept whole: its loss and its lr
        assert sorted(m.key for m in logger.metrics_queued if m.step == step and m.key != "val_psnr_db") == [
            "loss",
            "lr",
        ]
    assert [(m.step, m.value) for m in logger.reports_queued if m.key == "val_psnr_db"] == [
        (250, 2.5), (500, 5.0), (777, 7.77), (1000, 10.0)]  # fmt: skip
    assert logger.thinned == 2000 - 2 * len(per_step)
    assert capsys.readouterr().out.count("the per-step ones are kept at every other step") == 1
    assert logger.close(wait=0) == len(logger.metrics_queued) + len(logger.reports_queued)
    assert f"{logger.thinned} per-step metric values were left out" in capsys.readouterr().out
