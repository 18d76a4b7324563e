"""A small Python client of the FaceEditTalker HTTP service (``serve/``).

    from fet.client import Client
    c = Client("http://127.0.0.1:8000", api_key="...")      # or FET_API_KEY in the environment
    ref = c.encode("me.jpg")                                 # invert once, reuse the id
    Path("glasses.png").write_bytes(c.edit(ref, text="add glasses"))
    Path("talk.mp4").write_bytes(c.generate(ref, "speech.wav", edits={"Smiling": 0.4}))

Long speech goes through jobs (``submit`` → ``wait`` → result bytes). A request the service is too
busy for (503) is sent again after the wait it asks for. Errors raise ``ServiceError`` with the
service's message and HTTP status.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import requests


class ServiceError(RuntimeError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


def _bytes(data: bytes | str | os.PathLike) -> bytes:
    return data if isinstance(data, bytes) else Path(data).read_bytes()


class Client:
    """``retries``: how many times a request the service is too busy for (503) is sent again, after
    the wait its ``Retry-After`` asks (at most ``max_wait`` seconds)."""

    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 600,
                 retries: int = 10, max_wait: float = 30.0) -> None:  # fmt: skip
        self.url, self.timeout, self.retries, self.max_wait = url.rstrip("/"), timeout, retries, max_wait
        key = api_key or os.environ.get("FET_API_KEY")
        self.session = requests.Session()
        if key:
            self.session.headers["X-API-Key"] = key

    def _call(self, method: str, path: str, **kw) -> requests.Response:
        for attempt in range(self.retries + 1):
            r = self.session.request(method, f"{self.url}{path}", timeout=self.timeout, **kw)
            if r.status_code != 503 or "Retry-After" not in r.headers or attempt == self.retries:
                break
            wait = r.headers["Retry-After"]
            time.sleep(min(float(wait) if wait.replace(".", "", 1).isdigit() else 1.0, self.max_wait))  # or a date
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ServiceError(r.status_code, str(detail))
        return r

    @staticmethod
    def _face(
        face: str | bytes | os.PathLike, files: dict, data: dict, field: str = "image", ref_field: str = "reference_id"
    ) -> None:
        """A 32-hex reference id goes as ``reference_id``; anything else is an image file or its bytes."""
        if isinstance(face, str) and len(face) == 32 and all(c in "0123456789abcdef" for c in face):
            data[ref_field] = face
        else:
            files[field] = ("image", _bytes(face))

    def health(self) -> bool:
        return self._call("GET", "/healthz").json().get("status") == "ok"

    def attributes(self) -> dict:
        return self._call("GET", "/v1/attributes").json()

    def encode(self, image: bytes | str | os.PathLike) -> str:
        """Detect, align and invert a face once → its reference id."""
        return self._call("POST", "/v1/references", files={"image": ("image", _bytes(image))}).json()["reference_id"]

    def edit(self, face, edits: dict[str, float] | None = None, text: str | None = None) -> bytes:
        """Image or reference id + edits → PNG bytes."""
        files, data = {}, {}
        self._face(face, files, data)
        if edits:
            data["edits"] = json.dumps(edits)
        if text:
            data["text"] = text
        return self._call("POST", "/v1/edit", files=files or None, data=data).content

    def _media(self, face, audio, edits, text) -> tuple[dict, dict]:
        files, data = {"audio": ("audio", _bytes(audio))}, {}
        self._face(face, files, data)
        if edits:
            data["edits"] = json.dumps(edits)
        if text:
            data["text"] = text
        return files, data

    def generate(self, face, audio, edits: dict[str, float] | None = None, text: str | None = None) -> bytes:
        """Image or reference id + speech (+ edits) → mp4 bytes (a job is waited for when the service makes one)."""
        files, data = self._media(face, audio, edits, text)
        r = self._call("POST", "/v1/generate", files=files, data=data)
        if r.status_code == 202:
            return self.wait(r.json()["id"])
        return r.content

    def submit(self, face, audio, edits: dict[str, float] | None = None, text: str | None = None) -> str:
        files, data = self._media(face, audio, edits, text)
        return self._call("POST", "/v1/jobs", files=files, data=data).json()["id"]

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}").json()

    def cancel(self, job_id: str) -> dict | None:
        """Cancel a queued or running job → its state (``cancelled``); a finished job is deleted with its
        result → None."""
        r = self._call("DELETE", f"/v1/jobs/{job_id}")
        return r.json() if r.status_code == 200 else None

    def wait(self, job_id: str, poll: float = 0.5, timeout: float | None = None) -> bytes:
        """Poll a job until it is done → mp4 bytes; a failed job raises ``ServiceError``. The job runs on
        whatever happens to the connection, so a poll that cannot reach the service (the HTTP proxy
        restarting, a gateway's 502/503/504) is tried again until ``timeout``."""
        deadline = time.time() + (timeout or self.timeout)
        while time.time() < deadline:
            try:
                state = self.job(job_id)
                if state["state"] == "done":
                    return self._call("GET", f"/v1/jobs/{job_id}/result").content
            except (requests.ConnectionError, requests.Timeout):
                state = {"state": "unreachable"}
            except ServiceError as e:
                if e.status not in (502, 503, 504):
                    raise
                state = {"state": "unreachable"}
            if state["state"] == "failed":
                raise ServiceError(500, f"job {job_id} failed: {state['error']}")
            if state["state"] == "cancelled":
                raise ServiceError(409, f"job {job_id} was cancelled")
            time.sleep(poll)
        raise TimeoutError(f"job {job_id} not done after {timeout or self.timeout:g} s")

    def interpolate(self, a, b, t: float | None = None, frames: int | None = None) -> bytes:
        files, data = {}, {}
        self._face(a, files, data, "image_a", "reference_a")
        self._face(b, files, data, "image_b", "reference_b")
        data |= {"t": t} if t is not None else {"frames": frames}
        return self._call("POST", "/v1/interpolate", files=files or None, data=data).content
