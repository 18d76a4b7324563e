"""What every Ray job entry point shares: argument parsing, config loading, connecting to Ray."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import NoReturn, TypeVar

from fet import storage
from fet.config import ConfigError, load_config

T = TypeVar("T")

# MediaPipe/TFLite log a few lines per detector to stderr; workers start with them off
QUIET_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}


def parse_args(prog: str, description: str, example: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The job's arguments; ``example`` shows overrides of that job's own config keys in ``--help``."""
    p = argparse.ArgumentParser(prog=f"python -m {prog}", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--config", help="YAML config (configs/...); defaults apply without one")
    p.add_argument("overrides", nargs="*", help=f"key=value overrides of the config's keys, e.g. {example}")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    return p.parse_intermixed_args(argv)  # overrides before or after --config


def load_job_config(cls: type[T], args: argparse.Namespace) -> T:
    """The job's config, or exit 2 with the message (a user error, not a traceback)."""
    try:
        return load_config(cls, args.config, args.overrides)
    except (ConfigError, ValueError, OSError) as e:
        fail(e)


def _job_config() -> dict:
    """What Ray tells the driver of a submitted job about it (empty when this process is none)."""
    try:
        config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    except ValueError:
        return {}
    return config if isinstance(config, dict) else {}


def shipped_working_dir() -> str | None:
    """The URI of the working directory shipped with this job (``ray job submit --working-dir``), when this
    process is that job's driver: its current directory is then Ray's temporary copy of it."""
    return (_job_config().get("runtime_env") or {}).get("working_dir")


def submission_id() -> str | None:
    """The id ``ray job submit`` gave the job whose driver this process is (what ``ray job stop`` takes)."""
    return (_job_config().get("metadata") or {}).get("job_submission_id")


def check_shipped_paths(outputs: dict[str, str], inputs: dict[str, str] | None = None) -> None:
    """In a job whose current directory is Ray's temporary copy of its shipped working directory, raise
    ConfigError for an output (setting → path or URI) given as a relative local path, and for an input
    given as one that the copy does not hold. Ray deletes the copy once no job uses it, and what the job
    wrote there goes with it (a resubmitted run would not find its checkpoints); the copy leaves out
    what ``.gitignore`` names (``data/``, ``outputs/``), so an input there would be reported missing."""
    shipped = shipped_working_dir()
    if shipped is None:
        return
    where = f"this job runs in Ray's temporary copy of the working directory it was submitted with ({shipped})"
    fix = "give an absolute path on a disk the cluster shares, or an s3:// URI"
    for role, paths in (("output", outputs), ("input", inputs or {})):
        for key, value in paths.items():
            path = value.removeprefix("sqlite:///")
            if not path or "://" in path or Path(path).is_absolute():
                continue
            if role == "output":
                raise ConfigError(f"{key}={value}: a relative path, and {where}, deleted with what was written in "
                                  f"it; {fix}")  # fmt: skip
            if not Path(path).exists():
                raise ConfigError(f"{key}={value}: a relative path, and {where}, which does not hold it (the copy "
                                  f"leaves out what .gitignore names); {fix}")  # fmt: skip


def for_workers(path: str | None) -> str | None:
    """``path`` as this job's Ray workers must be given it. They do not run in this process's directory but
    in the one the cluster's Ray was started in (a head started elsewhere, then joined with ``--address``),
    where a relative path names another file or none. So a relative local path is made absolute here,
    unless this job shipped its working directory (``ray job submit --working-dir``), in whose copy every
    worker runs. URIs and empty values are given as they are. (Serve's ``build_app`` does the same.)"""
    return path if shipped_working_dir() is not None else storage.absolute(path)


def say(text: str) -> None:
    """One line to stdout, once. In a Ray Train worker ``print`` is patched to go to Train's log and, as
    Ray wraps the worker's stdout, also to stdout, where Ray forwards both copies to the job's output."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def fail(error: Exception) -> NoReturn:
    """End the job with exit code 2 and a one-line message: a user error, not a traceback."""
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2) from error


def init_ray(address: str | None = None) -> None:
    """Connect to the cluster (``ray job submit`` sets RAY_ADDRESS) or start a local Ray."""
    import ray

    os.environ.update({k: v for k, v in QUIET_ENV.items() if k not in os.environ})
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(runtime_env={"env_vars": QUIET_ENV}, log_to_driver=True)
