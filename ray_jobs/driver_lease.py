"""One driver at a time trains a run: a lease kept beside the run's checkpoints.

Two drivers of one run name (a ``ray job submit`` sent twice, two people, a local run beside a
submitted one) would train into the same checkpoints, each resuming from what the other wrote, and
log into one MLflow run. So a driver takes ``storage_path/name/fet_driver.json`` before it trains: it
writes the file where none is (``storage.create_new``: of drivers racing, on one machine or many, one
wins) and touches it every ``RENEW_SECONDS`` while it trains. Another driver is refused and told which
driver holds the run. A driver that dies holding it (SIGKILL, its node lost) stops renewing it, and
``STALE_SECONDS`` after the last renewal the next driver takes the run over; one that comes once a
renewal is missed (an automatic retry) waits for that rather than fail. Ages are read by the
storage's clock (``storage.age``), so drivers whose clocks differ agree on them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fet import storage
from ray_jobs.common import submission_id

LEASE = "fet_driver.json"
RENEW_SECONDS = 15.0
STALE_SECONDS = 90.0  # six renewals missed: the driver is gone, not slow


class RunHeldError(RuntimeError):
    """The run is being trained by another driver."""


def _describe(holder: dict[str, Any]) -> str:
    job = f", Ray job {holder['submission_id']}" if holder.get("submission_id") else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}{job}, since {holder.get('since', '?')}"


class DriverLease:
    """The lease of the run kept in ``run_dir`` (``storage_path/name``) for this driver."""

    def __init__(self, run_dir: str, stale_seconds: float = STALE_SECONDS, renew_seconds: float = RENEW_SECONDS):
        self.run_dir, self.uri = run_dir, storage.join(run_dir, LEASE)
        self.stale_seconds, self.renew_seconds = stale_seconds, renew_seconds
        self.missed_seconds = 2 * renew_seconds + 1.0  # not renewed on time (S3 keeps times to the second)
        self.holder = {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
                       "submission_id": submission_id(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}  # fmt: skip
        self._body = json.dumps(self.holder, indent=2).encode()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the run, or raise ``RunHeldError`` naming the driver that holds it."""
        for _ in range(3):  # the holder may let go between our attempt and our look at it
            if storage.create_new(self.uri, self._body):
                return self._start()
            found = self._read()
            if found is None:
                continue
            holder, age = found
            if self.missed_seconds <= age < self.stale_seconds:
                # a renewal missed: its driver has most likely died (SIGKILL, a lost node) and this is the retry
                # that follows; wait for the lease to lapse rather than fail it, and look again (a driver that
                # was only slow has renewed it by then, and this one is refused)
                wait = self.stale_seconds - age + 1.0  # S3 keeps times to the second
                print(f"{self.run_dir}: the driver holding this run ({_describe(holder)}) last renewed its lease "
                      f"{age:.0f} s ago; waiting {wait:.0f} s for the lease to lapse", flush=True)  # fmt: skip
                time.sleep(wait)
                continue
            if age < self.stale_seconds:
                stop = f" or stop it (ray job stop {holder['submission_id']})" if holder.get("submission_id") else ""
                raise RunHeldError(
                    f"{self.run_dir}: another driver is training this run ({_describe(holder)}; it renewed its "
                    f"lease {age:.0f} s ago). Wait for it to end{stop}, then submit again: the run resumes, or "
                    f"reports that it finished. A driver that died lets go {self.stale_seconds:.0f} s after its "
                    f"last renewal"
                )
            # its driver is gone; of the drivers taking the run over, the one that claims this stale lease does
            if not storage.create_new(f"{self.uri}.taken-{holder.get('token', 'unreadable')}"):
                raise RunHeldError(f"{self.run_dir}: another driver is taking this run over just now")
            storage.delete(self.uri)
            if storage.create_new(self.uri, self._body):
                print(f"{self.run_dir}: took the run over from a driver that stopped renewing its lease "
                      f"{age:.0f} s ago ({_describe(holder)})", flush=True)  # fmt: skip
                return self._start()
        raise RunHeldError(f"{self.run_dir}: other drivers keep taking this run; submit it once")

    def release(self) -> None:
        """Stop renewing and remove the lease, when it is still this driver's."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            if self._mine():
                storage.delete(self.uri)
        except storage.StorageError as e:
            print(f"{self.uri}: could not remove this driver's lease ({e}); it lapses in "
                  f"{self.stale_seconds:.0f} s", flush=True)  # fmt: skip

    def _read(self) -> tuple[dict[str, Any], float] | None:
        """The holder and the lease's age; None when it is gone."""
        try:
            age = storage.age(self.uri)
            text = storage.read_text(self.uri)
        except storage.NotFoundError:
            return None
        try:
            holder = json.loads(text)
        except ValueError:  # written only in part by a driver that died meanwhile
            holder = {}
        return (holder if isinstance(holder, dict) else {}), age

    def _mine(self) -> bool:
        try:
            return storage.read_bytes(self.uri) == self._body
        except storage.NotFoundError:
            return False

    def _start(self) -> None:
        self._renewer = threading.Thread(target=self._renew, name="fet-driver-lease", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_seconds):
            try:
                if not self._mine():
                    print(f"{self.uri}: this driver's lease was taken over (it went {self.stale_seconds:.0f} s "
                          "without renewal); another driver may now train this run", flush=True)  # fmt: skip
                    return
                storage.touch(self.uri)
            except storage.StorageError as e:  # passing trouble: the next renewal tries again
                print(f"{self.uri}: could not renew this driver's lease ({e})", flush=True)


_HELD: dict[tuple[str, int], DriverLease] = {}  # (lease, thread) → the lease that thread holds


@contextlib.contextmanager
def hold(run_dir: str) -> Iterator[DriverLease]:
    """Hold the run for the block. A thread that holds it already goes on holding it: the job's ``main``
    takes it before Ray starts, and the training run inside finds it held. Any other thread, in this
    process or another, is refused (``RunHeldError``)."""
    key = (storage.join(run_dir, LEASE), threading.get_ident())
    if key in _HELD:
        yield _HELD[key]
        return
    lease = DriverLease(run_dir)
    lease.acquire()
    _HELD[key] = lease
    try:
        yield lease
    finally:
        del _HELD[key]
        lease.release()
