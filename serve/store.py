"""What replicas share: encoded references and generation jobs, in a directory (local or ``s3://``).

refs/<id>.safetensors          an inverted face (``fet.references``), reused by id
jobs/<id>/state.json           state, progress, timestamps, error
jobs/<id>/result.mp4           the video, once done
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from fet import storage


class StateStore:
    def __init__(self, root: str) -> None:
        self.root = root

    # -- references -----------------------------------------------------------------------------------
    def reference_uri(self, ref_id: str) -> str:
        return storage.join(self.root, "refs", f"{ref_id}.safetensors")

    def has_reference(self, ref_id: str) -> bool:
        return storage.exists(self.reference_uri(ref_id))

    def put_reference(self, ref_id: str, data: bytes) -> None:
        storage.write_bytes(self.reference_uri(ref_id), data)

    def get_reference(self, ref_id: str) -> bytes:
        return storage.read_bytes(self.reference_uri(ref_id))

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
        state["updated"] = time.time()
        storage.write_text(self._job(state["id"], "state.json"), json.dumps(state))

    def job(self, job_id: str) -> dict[str, Any] | None:
        uri = self._job(job_id, "state.json")
        return json.loads(storage.read_text(uri)) if storage.exists(uri) else None

    def put_result(self, job_id: str, data: bytes) -> None:
        storage.write_bytes(self._job(job_id, "result.mp4"), data)

    def result(self, job_id: str) -> bytes:
        return storage.read_bytes(self._job(job_id, "result.mp4"))
