"""What a job logs into its MLflow run, kept while the tracking server does not answer.

Training runs for hours; a tracking server that restarts or drops off the network for a while must not
end it. Every call here is queued and sent in order by ``flush``. When sending fails, what is queued is
kept and tried again at the first ``flush`` after ``retry_seconds`` (doubling while it keeps failing).
The job prints one line when the server stops answering and one when it answers again, and training
goes on. ``close`` waits a bounded time for the rest at the end and says what could not be sent.
What waits is bounded: past ``MAX_METRICS`` values, the per-step values (loss, lr, …) are kept at every
other step, then every fourth, and so on while the server stays away, so that a day-long outage keeps the
whole curve at a coarser step; held-out reports are kept whole. Past ``MAX_QUEUED`` uploads the oldest
sample images are dropped.

MLflow's own client retries a refused request for about 4 minutes (7 retries, backoff factor 2) before it
raises, which would stall the step that flushes. Where the job's environment does not choose, the logger
makes each request give up after 2 quick retries; it retries itself.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import requests
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from ray_jobs.common import say
from ray_jobs.tracking import open_client, redact

SEND_ERRORS = (MlflowException, requests.RequestException, OSError)
BATCH = 500  # metrics per log_batch request (MLflow's limit is 1000)
FINAL_WAIT = 120.0  # seconds the end of a job waits for a tracking server that does not answer
MAX_QUEUED = 200  # uploads and tags kept while the server is away; older sample images are dropped first
MAX_METRICS = 500_000  # metric values kept while the server is away (about 90 MB); past it they are thinned
REQUEST_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}  # fmt: skip


class RunLogger:
    """Rank 0's (or an evaluation's) handle on one MLflow run: batched metrics, tags, images and files,
    and the final component."""

    def __init__(self, tracking_uri: str, run_id: str, retry_seconds: float = 30.0) -> None:
        for key, value in REQUEST_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self.client = open_client(tracking_uri)
        self.tracking_uri = redact(tracking_uri)  # as it is printed: no password
        self._raw_uri = tracking_uri
        self.run_id = run_id
        self.retry_seconds = retry_seconds
        self.metrics_queued: list[Metric] = []
        self.calls_queued: list[tuple[str, Callable[[], None]]] = []  # (what, the request)
        self.dropped = 0  # uploads dropped because too many were waiting
        self.thinned = 0  # per-step metric values left out because too many were waiting
        self.stride = 1  # while too many wait: per-step values are kept at steps that are multiples of this
        self.reports_queued: list[Metric] = []  # held-out reports' values: never thinned
        self.failing_since: float | None = None
        self.failures = 0  # failed sends in a row: the wait before the next try doubles, up to 5 minutes
        self.next_try = 0.0

    # -- what to log ----------------------------------------------------------------------------------------
    def metrics(self, values: dict[str, float], step: int, report: bool = False) -> None:
        """Per-step values (loss, lr, …), or with ``report`` a held-out report's: never thinned."""
        if not report and step % self.stride:
            self.thinned += len(values)
            return
        now = int(time.time() * 1000)
        queued = [Metric(k, float(v), now, step) for k, v in values.items()]
        if report:
            self.reports_queued += queued
            return
        self.metrics_queued += queued
        if len(self.metrics_queued) > MAX_METRICS:
            self._thin()

    def tag(self, key: str, value: str) -> None:
        self._queue(f"tag {key}", lambda: self.client.set_tag(self.run_id, key, value))
        self.flush()

    def image(self, png: bytes, name: str, step: int | None = None) -> None:
        """``samples/step_000100/name`` (or ``samples/final/name``) in the run's artifacts."""
        self.files({name: png}, "samples/final" if step is None else f"samples/step_{step:06d}")

    def files(self, contents: dict[str, bytes], folder: str) -> None:
        """Each ``{name: bytes}`` as the artifact ``folder/name`` (held in memory until sent)."""
        self._queue(f"artifacts {folder}", lambda: self._upload(dict(contents), folder))
        self.flush()

    # -- sending --------------------------------------------------------------------------------------------
    @property
    def unsent(self) -> int:
        return len(self.reports_queued) + len(self.metrics_queued) + len(self.calls_queued)

    def flush(self) -> bool:
        """Send everything queued, unless the server failed less than ``retry_seconds`` ago → all sent.
        Never raises for a server that does not answer."""
        if time.monotonic() < self.next_try:
            return False
        try:
            while self.calls_queued:
                what, call = self.calls_queued[0]
                self._send(what, call)
                self.calls_queued.pop(0)
            for queue in (self.reports_queued, self.metrics_queued):
                while queue:
                    batch = queue[:BATCH]
                    self._send(f"{len(batch)} metrics", partial(self.client.log_batch, self.run_id, metrics=batch))
                    del queue[:BATCH]
        except SEND_ERRORS as e:
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                say(f"MLflow at {self.tracking_uri} does not take the run's logs ({self._reason(e)}); training goes "
                    f"on, and the {self.unsent} waiting are sent when it answers")  # fmt: skip
            self.failures += 1
            self.next_try = time.monotonic() + min(300.0, self.retry_seconds * 2 ** (self.failures - 1))
            return False
        self.failures, self.stride = 0, 1
        if self.failing_since is not None:
            say(f"MLflow at {self.tracking_uri} answers again after {time.monotonic() - self.failing_since:.0f} s; "
                "what waited is sent")  # fmt: skip
            self.failing_since = None
        return True

    def close(self, wait: float) -> int:
        """Send what is queued, trying for up to ``wait`` seconds → how many items could not be sent."""
        deadline = time.monotonic() + wait
        while True:
            self.next_try = 0.0
            if self.flush():
                break
            if time.monotonic() + min(5.0, self.retry_seconds) > deadline:
                say(f"MLflow at {self.tracking_uri}: {self.unsent} logged items of run {self.run_id} could not be "
                    f"sent within {wait:.0f} s and are lost; the job's own outputs are not")  # fmt: skip
                break
            time.sleep(min(5.0, self.retry_seconds))
        if self.dropped:
            say(f"MLflow: {self.dropped} uploads were dropped while the server did not answer")
        if self.thinned:
            say(f"MLflow: {self.thinned} per-step metric values were left out while the server did not answer "
                "(the curve of that time is kept at a coarser step)")  # fmt: skip
        return self.unsent

    def component(self, directory: str, model_name: str | None, wait: float) -> str | None:
        """Log the exported component's files and register them as a new version of ``model_name`` →
        the version, or None when not registered (no name, or the server did not answer within ``wait``)."""
        version: list[str] = []

        def register() -> None:
            self.client.log_artifacts(self.run_id, directory, "component")
            if model_name:
                version.append(self._register(model_name))

        self._queue("component", register, droppable=False)
        self.close(wait)
        return version[0] if version else None

    def _thin(self) -> None:
        """Keep the waiting per-step values at every other step of those kept so far."""
        self.stride *= 2
        kept = [m for m in self.metrics_queued if m.step % self.stride == 0]
        if self.thinned == 0:
            say(f"MLflow: over {MAX_METRICS} metric values wait to be sent; the per-step ones are kept at every "
                "other step until it answers, and at a coarser step the longer it is away")  # fmt: skip
        self.thinned += len(self.metrics_queued) - len(kept)
        self.metrics_queued = kept

    # -- requests -------------------------------------------------------------------------------------------
    def _queue(self, what: str, call: Callable[[], None], droppable: bool = True) -> None:
        self.calls_queued.append((what, call))
        if droppable and len(self.calls_queued) > MAX_QUEUED:
            oldest = next((i for i, (w, _) in enumerate(self.calls_queued) if w.startswith("artifacts")), None)
            if oldest is not None:
                self.calls_queued.pop(oldest)
                self.dropped += 1

    def _upload(self, contents: dict[str, bytes], folder: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            for name, data in contents.items():
                (Path(d) / name).write_bytes(data)
            self.client.log_artifacts(self.run_id, d, folder)

    def _send(self, what: str, call: Callable[[], None]) -> None:
        """Make one request. One that MLflow refuses (an invalid value: a 4xx other than authentication,
        timeout or rate limit) is dropped with a line, so it cannot hold back all that follows it."""
        try:
            call()
        except MlflowException as e:
            status = e.get_http_status_code()
            if not 400 <= status < 500 or status in (401, 403, 408, 429):
                raise
            say(f"MLflow refused {what} of run {self.run_id} ({self._reason(e)}); dropped")

    def _reason(self, error: Exception) -> str:
        text = (str(error).splitlines() or [""])[0].replace(self._raw_uri, self.tracking_uri)
        return f"{type(error).__name__}: {text[:200]}"

    def _register(self, model_name: str) -> str:
        try:
            self.client.create_registered_model(model_name)
        except MlflowException as e:  # already registered; anything else is raised again by the next call
            if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
                raise
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/component"
        return str(self.client.create_model_version(model_name, source, run_id=self.run_id).version)
