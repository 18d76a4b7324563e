"""What every Ray job entry point shares: argument parsing, config loading, connecting to Ray."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn, TypeVar

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
