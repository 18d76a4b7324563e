"""What replicas share: encoded references and generation jobs, in a directory (local or ``s3://``).

refs/<id>.safetensors          an inverted face (``fet.references``), reused by id
jobs/<id>/state.json           state, progress, timestamps, error
jobs/<id>/speech.npy           its speech (16 kHz float32), to run it again when its replica stops
jobs/<id>/result.mp4           the video, once done
jobs/<id>/run-<n>              the claim of the replica that runs it the n-th time (n ≥ 2)
jobs/<id>/cancelled            the mark of a job cancelled while it was queued or running

A job unchanged for longer than its time to live is deleted, result and all (``expire_jobs``); so is a
reference unused for longer than its own (``expire_references``: a use marks the file, ``touch_reference``).
Both go by the files' modification times, so a sweep is one listing, however many files there are. Every
age is read by the storage's clock (``storage.age``, ``storage.ages``), never by comparing a time one
replica wrote with another's clock: replicas on nodes whose clocks differ agree on which job is silent.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from fet import storage


class RunStoppedError(RuntimeError):
    """A run of a job that must stop: another replica has run the job again since (``claim_run``), or
    the job was cancelled (``cancel``)."""


class StateStore:
    """``touch_every``: how often at most ``use_reference`` marks a reference used in storage; between
    marks it only checks that the reference is there."""

    def __init__(self, root: str, touch_every: float = 0.0) -> None:
        self.root, self.touch_every = root, touch_every
        self._touched: dict[str, float] = {}  # reference id → when this store last marked it used

    # -- references -----------------------------------------------------------------------------------
    def reference_uri(self, ref_id: str) -> str:
        return storage.join(self.root, "refs", f"{ref_id}.safetensors")

    def has_reference(self, ref_id: str) -> bool:
        return storage.exists(self.reference_uri(ref_id))

    def put_reference(self, ref_id: str, data: bytes) -> None:
        storage.write_bytes(self.reference_uri(ref_id), data)
        self._touched[ref_id] = time.time()

    def get_reference(self, ref_id: str) -> bytes:
        return storage.read_bytes(self.reference_uri(ref_id))

    def touch_reference(self, ref_id: str) -> None:
        """Mark the reference used now; a ``NotFoundError`` when it is not stored."""
        storage.touch(self.reference_uri(ref_id))

    def use_reference(self, ref_id: str) -> bool:
        """Whether the reference is stored; marks it used (at most every ``touch_every`` seconds), so that
        ``expire_references`` keeps it."""
        now = time.time()
        if now - self._touched.get(ref_id, -float("inf")) <= self.touch_every:
            return self.has_reference(ref_id)
        try:
            self.touch_reference(ref_id)
        except storage.NotFoundError:
            return False
        if len(self._touched) >= 100_000:
            self._touched.clear()
        self._touched[ref_id] = now
        return True

    def expire_references(self, ttl_seconds: float) -> list[str]:
        """Delete every reference neither written nor marked used for more than ``ttl_seconds`` → their ids."""
        try:
            ages = storage.ages(storage.join(self.root, "refs"))
        except storage.NotFoundError:  # no reference yet
            return []
        expired = []
        for uri, age in sorted(ages.items()):
            if age > ttl_seconds:
                storage.delete(uri)
                expired.append(uri.rsplit("/", 1)[-1].removesuffix(".safetensors"))
        return expired

    # -- jobs -----------------------------------------------------------------------------------------------
    def _job(self, job_id: str, name: str) -> str:
        return storage.join(self.root, "jobs", job_id, name)

    def new_job(self, info: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        state = {"id": uuid.uuid4().hex, "state": "queued", "progress": 0.0, "created": now, "updated": now,
                 "error": None, **info}  # fmt: skip
        self.save_job(state)
        return state

    def save_job(self, state: dict[str, Any]) -> None:
        """Write the state of a job's run, unless the run must stop (``RunStoppedError``, see ``stopped``):
        the replica of an earlier run that comes back after it was taken for lost never writes over the
        later run's state, nor a run over its job's cancellation. (The check and the write are two
        requests: a write that races the claim lands at most once, and the later run's next write, a
        quarter of ``job_stale_seconds`` on, puts its state back.)"""
        if reason := self.stopped(state):
            raise RunStoppedError(f"job {state['id']}: run {state.get('attempts', 1)} {reason}")
        self._write(state)

    def _write(self, state: dict[str, Any]) -> None:
        state["updated"] = time.time()
        storage.write_text(self._job(state["id"], "state.json"), json.dumps(state))

    def _marks(self, job_id: str) -> set[str]:
        """The names of the job's files (one listing)."""
        try:
            return {uri.rsplit("/", 1)[-1] for uri in storage.list_files(self._job(job_id, ""))}
        except storage.NotFoundError:  # the job is gone
            return set()

    def stopped(self, state: dict[str, Any]) -> str | None:
        """Why the run ``state`` describes must stop, or None: another replica has claimed a later run of
        the job, or the job was cancelled."""
        marks = self._marks(state["id"])
        if f"run-{state.get('attempts', 1) + 1}" in marks:
            return "was taken over by a later run"
        return "was cancelled" if "cancelled" in marks else None

    def cancel(self, state: dict[str, Any]) -> None:
        """Cancel a queued or running job: its run stops at its next write, and the job reads cancelled."""
        storage.create_new(self._job(state["id"], "cancelled"))
        state.update(state="cancelled", error=None)
        self._write(state)

    def cancelled(self, job_id: str) -> bool:
        return "cancelled" in self._marks(job_id)

    def job(self, job_id: str) -> dict[str, Any] | None:
        """The job's state; None when there is no such job."""
        try:
            return json.loads(storage.read_text(self._job(job_id, "state.json")))
        except storage.NotFoundError:
            return None

    def silent(self, job_id: str) -> float | None:
        """Seconds since the job's state was last written, by the storage's clock; None when it is gone."""
        try:
            return storage.age(self._job(job_id, "state.json"))
        except storage.NotFoundError:
            return None

    def claim_run(self, job_id: str, attempt: int) -> bool:
        """Whether this caller, of all replicas, runs the job's ``attempt``-th run (a marker file created
        only where none is)."""
        return storage.create_new(self._job(job_id, f"run-{attempt}"))

    def claim_age(self, job_id: str, attempt: int) -> float | None:
        """Seconds since the job's ``attempt``-th run was claimed, by the storage's clock; None when it was
        not (or the job is gone)."""
        try:
            return storage.age(self._job(job_id, f"run-{attempt}"))
        except storage.NotFoundError:
            return None

    def put_speech(self, job_id: str, speech: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(speech, np.float32), allow_pickle=False)
        storage.write_bytes(self._job(job_id, "speech.npy"), buf.getvalue())

    def speech(self, job_id: str) -> np.ndarray | None:
        """The job's stored speech; None when none is stored."""
        try:
            return np.load(io.BytesIO(storage.read_bytes(self._job(job_id, "speech.npy"))), allow_pickle=False)
        except storage.NotFoundError:
            return None

    def put_result(self, job_id: str, data: bytes) -> None:
        storage.write_bytes(self._job(job_id, "result.mp4"), data)

    def result(self, job_id: str) -> bytes:
        return storage.read_bytes(self._job(job_id, "result.mp4"))

    def expire_jobs(self, ttl_seconds: float) -> list[str]:
        """Delete every job unchanged for more than ``ttl_seconds`` (a running job changes with its
        progress), its result with it → their ids. The files' times say when each last changed: one
        listing, however many jobs there are."""
        try:
            ages = storage.ages(storage.join(self.root, "jobs"))
        except storage.NotFoundError:  # no job yet
            return []
        by_job: dict[str, dict[str, float]] = {}
        for uri, age in ages.items():
            by_job.setdefault(uri.rsplit("/", 2)[-2], {})[uri] = age
        expired = []
        for job_id, files in sorted(by_job.items()):
            if min(files.values()) <= ttl_seconds:
                continue
            self._delete(job_id, list(files))
            expired.append(job_id)
        return expired

    def delete_job(self, job_id: str) -> None:
        """Delete a job and its result now."""
        self._delete(job_id, storage.list_files(self._job(job_id, "")))

    def _delete(self, job_id: str, files: list[str]) -> None:
        for uri in sorted(files, key=lambda u: u.endswith("state.json")):  # the state last
            storage.delete(uri)
        if not storage.is_s3(self.root):
            with contextlib.suppress(OSError):  # not empty: a write under way keeps it
                Path(self._job(job_id, "")).rmdir()
