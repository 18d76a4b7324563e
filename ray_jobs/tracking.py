"""MLflow for training runs: one MLflow run per training run, kept across restarts and resubmits.

The driver creates the run (or reopens the one its training run recorded) and hands its id to the
workers; rank 0 logs into it with an ``MlflowClient`` (no process-global active run, so a restarted
worker simply logs on). Secrets never reach MLflow: keys that name credentials are masked and
passwords in URIs are stripped before params are logged; S3 keys and tracking tokens come from the
environment or the instance role.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.exceptions import MlflowException

RUN_NAME_TAG = "fet.run_name"
SECRET_KEY = re.compile(r"(secret|token|password|passwd|credential|access_key|api_key)", re.IGNORECASE)
MAX_PARAM = 500  # MLflow's limit on a param value
SUPPRESS_LINKS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"  # MLflow prints none of its "View run" links


def redact(value: Any, key: str = "") -> Any:
    """A config (nested dicts/lists) with credential-like keys masked and URI passwords removed."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if SECRET_KEY.search(key) and value not in (None, ""):
        return "***"
    if isinstance(value, str) and "://" in value and "@" in value:
        parts = urlsplit(value)
        if parts.password or parts.username:
            host = parts.hostname or ""
            netloc = f"{host}:{parts.port}" if parts.port else host
            return urlunsplit(parts._replace(netloc=netloc))
    return value


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """``{"optim": {"lr": 1e-4}}`` → ``{"optim.lr": "0.0001"}`` (lists kept as their text)."""
    if isinstance(value, dict) and value:
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): str(value)[:MAX_PARAM]}


def local_tracking_uri(uri: str, base: Path) -> str:
    """``sqlite:///relative.db`` → an absolute path (workers do not share the driver's working dir)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = (base / uri[len(prefix) :]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return uri


def system_info() -> dict[str, str]:
    import torch

    info = {
        "system.python": platform.python_version(),
        "system.platform": platform.platform(),
        "system.torch": torch.__version__,
        "system.cpu_count": str(os.cpu_count()),
        "system.cuda": str(torch.cuda.is_available()),
    }
    if torch.cuda.is_available():
        info["system.gpu"] = torch.cuda.get_device_name(0)
    for pkg in ("deepspeed", "ray", "mlflow", "diffusers"):
        with contextlib.suppress(ImportError):
            info[f"system.{pkg}"] = __import__(pkg).__version__
    return info


_READY: set[str] = set()  # tracking URIs whose store this process has opened
SQLITE = "sqlite:///"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI; None for any other store."""
    return Path(tracking_uri[len(SQLITE) :]) if tracking_uri.startswith(SQLITE) else None


def check_reachable(tracking_uri: str, timeout: float = 10.0) -> None:
    """ConnectionError naming ``tracking_uri`` when it is a tracking server that does not answer. MLflow's
    client retries a refused connection for minutes before its traceback; a job checks once, up front.
    Any HTTP answer counts: authentication and the API are MLflow's to judge."""
    if urlsplit(tracking_uri).scheme not in ("http", "https"):
        return
    import requests

    try:
        requests.get(tracking_uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as e:
        reason = type(e).__name__
        raise ConnectionError(f"mlflow.tracking_uri={redact(tracking_uri)}: the tracking server does not answer "
                              f"({reason}); start it or correct the URI") from e  # fmt: skip


def open_client(tracking_uri: str) -> MlflowClient:
    """An ``MlflowClient`` on ``tracking_uri``. The first open of a SQLite store in a process holds an
    exclusive lock next to the database: opening a new store creates and migrates its schema, and two
    jobs doing that at once on one file fail (``table _alembic_tmp_experiments already exists``). With a
    password in the URI, MLflow's own run links (printed as a run ends) are not printed: they would show it."""
    if redact(tracking_uri) != tracking_uri:
        os.environ[SUPPRESS_LINKS] = "true"
    db = sqlite_path(tracking_uri)
    if db is None or tracking_uri in _READY:
        return MlflowClient(tracking_uri)
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        mlflow_client = MlflowClient(tracking_uri)
        mlflow_client.search_experiments(max_results=1)  # the store is open: schema created or migrated
    _READY.add(tracking_uri)
    return mlflow_client


def _experiment_id(client: MlflowClient, name: str, tracking_uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    db = sqlite_path(tracking_uri)
    if db is not None:  # artifacts next to the database, not in the cwd
        location = db.parent.joinpath("mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by another job
        return client.get_experiment_by_name(name).experiment_id


def find_run(tracking_uri: str, experiment: str, run_name: str) -> str | None:
    """The id of the MLflow run of training run ``run_name``, if one exists."""
    client = open_client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'", max_results=1)
    return runs[0].info.run_id if runs else None


def reopen(tracking_uri: str, run_id: str) -> bool:
    """Mark the run RUNNING again → False when this tracking server has no such run (or it was deleted)."""
    client = open_client(tracking_uri)
    try:
        if client.get_run(run_id).info.lifecycle_stage == "deleted":
            return False
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return False
    client.update_run(run_id, status="RUNNING")
    return True


def new_run(tracking_uri: str, experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
    """A new MLflow run with the redacted, flattened params and the system info → its id."""
    client = open_client(tracking_uri)
    exp_id = _experiment_id(client, experiment, tracking_uri)
    run = client.create_run(exp_id, run_name=run_name, tags={RUN_NAME_TAG: run_name, **tags})
    flat = flatten(redact(params)) | system_info()
    items = [Param(k, v) for k, v in sorted(flat.items())]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i : i + 100])
    return run.info.run_id


def finish(tracking_uri: str, run_id: str, status: str) -> bool:
    """Mark the run ended with ``status`` → whether MLflow took it. A tracking server that does not answer
    is reported, not raised: the job's outcome stands without it."""
    try:
        open_client(tracking_uri).set_terminated(run_id, status=status)
    except (MlflowException, OSError) as e:
        print(f"MLflow at {redact(tracking_uri)}: run {run_id} could not be marked {status} ({type(e).__name__})",
              flush=True)  # fmt: skip
        return False
    return True
