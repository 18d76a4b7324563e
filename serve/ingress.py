"""The HTTP front of the service: FastAPI on Ray Serve, versioned routes, validation, auth and jobs.

Every input is checked here before a model runs: payload size, image format by content (PNG, JPEG,
WebP) and size, audio decodability and duration, edit names and α ranges. Bad input is a 4xx with a
message naming the field; a full queue downstream is a 503 with Retry-After. Uploaded bytes only:
no field names a path on the server.

(No ``from __future__ import annotations`` here: Serve rebuilds the route methods and FastAPI must
see real types, not strings, in their signatures.)
"""

import asyncio
import contextlib
import hmac
import io
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from fet.audio.load import SAMPLE_RATE, AudioError, check_speech, load_audio
from fet.editing.attributes import AttributeLibrary
from fet.images import ImageError, encode_png
from fet.landmarks.detector import NoFaceError
from fet.media.mp4 import encode_mp4
from fet.storage import NotFoundError, StorageError
from serve.options import AppOptions
from serve.store import RunStoppedError, StateStore

IMAGE_FORMATS = {"PNG", "JPEG", "WEBP"}
FileField = Annotated[UploadFile | None, File()]  # multipart file fields
TextField = Annotated[str | None, Form()]
FloatField = Annotated[float | None, Form()]
IntField = Annotated[int | None, Form()]
ID = re.compile(r"^[0-9a-f]{32}$")
logger = logging.getLogger("ray.serve")

app = FastAPI(
    title="FaceEditTalker",
    version="1.0",
    description="Edit a portrait's attributes and animate it with speech: talking-head video with the edits "
    "held in every frame.",
)


def _cause(e: BaseException) -> BaseException:
    """The user-facing exception inside a Ray task error (deployments raise, the ingress answers)."""
    return getattr(e, "cause", None) or e


async def gather_within(seconds: float, *calls: Awaitable[Any]) -> list[Any]:
    """``asyncio.gather`` of ``calls`` under a time limit. A caller cancelled meanwhile (a probe that
    stopped waiting) leaves the gathered future holding a CancelledError that nobody awaits any more,
    which asyncio then logs with a traceback as "exception was never retrieved": it is read here."""
    gathered = asyncio.gather(*calls)
    gathered.add_done_callback(lambda f: f.cancelled() or f.exception())
    return await asyncio.wait_for(gathered, timeout=seconds)


def _message(e: BaseException) -> str:
    return str(_cause(e)).strip().splitlines()[-1] if str(_cause(e)).strip() else type(e).__name__


@app.exception_handler(ImageError)
async def _image_error(request: Request, e: ImageError) -> JSONResponse:
    return JSONResponse({"detail": _message(e)}, status_code=415 if "not a readable image" in str(e) else 422)


@app.exception_handler(NoFaceError)
async def _no_face(request: Request, e: NoFaceError) -> JSONResponse:
    return JSONResponse({"detail": _message(e)}, status_code=422)


@app.exception_handler(AudioError)
async def _audio_error(request: Request, e: AudioError) -> JSONResponse:
    return JSONResponse({"detail": _message(e)}, status_code=413 if "longer than the maximum" in str(e) else 422)


@app.exception_handler(KeyError)
async def _unknown_id(request: Request, e: KeyError) -> JSONResponse:
    return JSONResponse({"detail": _message(e).strip("'\"")}, status_code=404)


@app.exception_handler(StorageError)
async def _storage_error(request: Request, e: StorageError) -> JSONResponse:
    """Storage that cannot be reached or refuses (not a missing file: that is the caller's 404) is the
    service's trouble, and passing: a 503 to retry, its detail in the log, not in the answer. A file gone
    between two reads (a job expired or deleted meanwhile) is a 404."""
    if isinstance(_cause(e), NotFoundError):
        return JSONResponse({"detail": "not found: deleted or expired meanwhile"}, status_code=404)
    logger.warning("%s %s: the state store failed: %s", request.method, request.url.path, _message(e))
    return JSONResponse({"detail": "the service's store of jobs and references cannot be reached just now; retry "
                                   "later"}, status_code=503,
                        headers={"Retry-After": str(request.app.state.retry_after)})  # fmt: skip


def _read_api_key(options: AppOptions) -> str | None:
    if options.api_key_file:
        return Path(options.api_key_file).read_text().strip() or None
    if options.api_key_env:
        return os.environ.get(options.api_key_env) or None
    return None


async def _check_key(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> None:
    key = request.app.state.api_key
    if key is not None and not hmac.compare_digest((x_api_key or "").encode(), key.encode()):  # in constant time
        raise HTTPException(401, "missing or wrong API key: send it in the X-API-Key header")


class _PayloadLimit:
    """413 for a request body over ``app.state.max_payload`` bytes: at once when its Content-Length says so,
    and as it arrives when it streams without one (chunked), so no more than the limit is ever read."""

    def __init__(self, asgi) -> None:
        self.asgi = asgi

    async def __call__(self, scope, receive, send) -> None:
        limit = getattr(scope["app"].state, "max_payload", None) if scope["type"] == "http" else None
        if not limit:
            return await self.asgi(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if length.isdigit() and int(length) > limit:
            response = JSONResponse({"detail": f"payload of {int(length)} bytes exceeds the limit of {limit} bytes"},
                                    status_code=413)  # fmt: skip
            return await response(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:  # FastAPI passes an HTTPException raised while it reads the form through
                raise HTTPException(413, f"payload of more than {limit} bytes exceeds the limit of {limit} bytes")
            return message

        await self.asgi(scope, counted, send)


app.add_middleware(_PayloadLimit)


@dataclass
class MediaForm:
    """The multipart fields of /v1/generate and /v1/jobs."""

    image: FileField = None
    audio: FileField = None
    reference_id: TextField = None
    edits: TextField = None
    text: TextField = None


@serve.deployment
@serve.ingress(app)
class Ingress:
    def __init__(self, encoder: DeploymentHandle, animator: DeploymentHandle, renderer: DeploymentHandle,
                 options: dict[str, Any], library: dict[str, Any], trained: list[str],
                 aurocs: dict[str, float] | None = None) -> None:  # fmt: skip
        self.encoder, self.animator, self.renderer = encoder, animator, renderer
        self.options = AppOptions(**options)
        self.store = StateStore(self.options.state_dir, touch_every=self.options.reference_ttl_seconds / 10)
        self.attribute_library = AttributeLibrary(**library)
        self.library, self.trained = self.attribute_library.describe(), set(trained)
        self.aurocs = aurocs or {}  # held-out AUROC of each attribute's classifier (fet.bundle.held_out_aurocs)
        self.names = {s.lower(): a["name"] for a in self.library for s in [a["name"], *a["synonyms"]]}
        self.max_alpha = self.attribute_library.max_abs_alpha
        app.state.api_key = _read_api_key(self.options)
        app.state.max_payload = int(self.options.max_payload_mb * 1024 * 1024)
        app.state.retry_after = self.options.retry_after_seconds
        self.tasks: set[asyncio.Task] = set()
        self.swept = 0.0  # when this replica last deleted expired jobs and references

    async def _downstream(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Make a deployment call (``call`` sends it) and await it. A replica that dies while it answers is
        replaced by Serve, and the call is sent again, up to ``replica_retries`` times (every call here can
        be repeated: it writes nothing, or the same reference again). Still failing, or a full queue
        there, is a 503 with ``Retry-After`` and a JSON detail, as every other error here. (Serve puts
        its own handler for ``BackPressureError`` on the app when the replica starts, which answers plain
        text without the header, so it is caught before it gets there.)"""
        retry = {"Retry-After": str(self.options.retry_after_seconds)}
        for attempt in range(self.options.replica_retries + 1):
            try:
                return await call()
            except BackPressureError as e:
                raise HTTPException(503, "the service is at capacity; retry later", headers=retry) from e
            except (RayActorError, DeploymentUnavailableError, ReplicaUnavailableError) as e:
                if attempt == self.options.replica_retries:
                    raise HTTPException(503, f"a model replica stopped while answering ({type(e).__name__}); it "
                                             "is being replaced: retry later", headers=retry) from e  # fmt: skip
                logger.warning("a replica stopped while answering (%s); sending the call again", type(e).__name__)
                await asyncio.sleep(0.5 * 2**attempt)  # the router learns the replica is gone

    # -- input checks --------------------------------------------------------------------------------------
    async def _image(self, upload: UploadFile | None, field: str = "image") -> bytes:
        if upload is None:
            raise HTTPException(422, f"{field}: missing; send an image file (PNG, JPEG or WebP) as multipart form data")
        data = await upload.read()
        if not data:
            raise HTTPException(422, f"{field}: empty file")
        try:
            img = Image.open(io.BytesIO(data))
            fmt = img.format
            if fmt not in IMAGE_FORMATS:
                raise HTTPException(415, f"{field}: {fmt} images are not accepted; send PNG, JPEG or WebP")
            w, h = img.size
            if w * h > self.options.max_image_pixels:
                raise HTTPException(
                    413, f"{field}: {w}x{h} pixels exceeds the limit of {self.options.max_image_pixels}"
                )
            img.load()
        except HTTPException:
            raise
        except Image.DecompressionBombError as e:  # PIL refuses to open it: far over any pixel limit
            raise HTTPException(
                413, f"{field}: exceeds the limit of {self.options.max_image_pixels} pixels ({e})"
            ) from e
        except Exception as e:  # PIL raises many types for bad data
            unknown = isinstance(e, UnidentifiedImageError)  # PIL's message names our buffer, not the upload
            reason = "no image format PIL knows" if unknown else f"{type(e).__name__}: {e}"
            raise HTTPException(415, f"{field}: not a readable PNG, JPEG or WebP image ({reason})") from e
        return data

    async def _audio(self, upload: UploadFile | None) -> np.ndarray:
        if upload is None:
            raise HTTPException(422, "audio: missing; send a speech file (wav, mp3, m4a, ...) as multipart form data")
        data = await upload.read()
        if not data:
            raise HTTPException(422, "audio: empty file")
        speech = await asyncio.to_thread(load_audio, data, SAMPLE_RATE, self.options.max_audio_seconds, "audio")
        check_speech(speech, 0.2, name="audio")
        return speech

    def _edits(self, edits: str | None, text: str | None) -> dict[str, float]:
        """``edits``: a JSON object {attribute or synonym: α}; ``text``: "add glasses, blond hair"."""
        out: dict[str, float] = {}
        if text:
            parsed = self.attribute_library.parse_text(text)
            if not parsed.edits:
                raise HTTPException(422, f"text: no known attribute in {text!r}; see GET /v1/attributes")
            out.update(parsed.edits)
        if edits:
            try:
                spec = json.loads(edits)
            except json.JSONDecodeError as e:
                raise HTTPException(422, f'edits: not valid JSON ({e.msg}); expected e.g. {{"Eyeglasses": 0.5}}') from e
            if not isinstance(spec, dict):
                raise HTTPException(422, "edits: expected a JSON object {attribute: alpha}")
            for name, alpha in spec.items():
                attr = self.names.get(str(name).lower())
                if attr is None:
                    raise HTTPException(422, f"edits: unknown attribute {name!r}; see GET /v1/attributes")
                if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not np.isfinite(alpha):
                    raise HTTPException(422, f"edits: alpha of {name!r} must be a number, got {alpha!r}")
                out[attr] = float(alpha)
        for attr, alpha in out.items():
            if abs(alpha) > self.max_alpha:
                raise HTTPException(422, f"edits: alpha {alpha:g} for {attr} is outside [-{self.max_alpha:g}, "
                                         f"{self.max_alpha:g}]")  # fmt: skip
            if attr not in self.trained:
                raise HTTPException(422, f"edits: {attr} has no trained classifier in this bundle; editable: "
                                         f"{sorted(self.trained)}")  # fmt: skip
        return out

    async def _reference(self, image: UploadFile | None, reference_id: str | None) -> tuple[str, dict]:
        if reference_id:
            if not ID.match(reference_id):
                raise HTTPException(422, "reference_id: expected the 32-character id returned by /v1/references")
            if not await asyncio.to_thread(self.store.use_reference, reference_id):
                raise HTTPException(404, f"reference_id {reference_id}: unknown, or unused for longer than "
                                         f"{self.options.reference_ttl_seconds} s; encode the image again")  # fmt: skip
            return reference_id, {"reference_id": reference_id, "notes": [], "cached": True}
        info = await self._downstream(partial(self.encoder.encode.remote, await self._image(image)))
        self._sweep()  # new references make room: expired ones go
        return info["reference_id"], info

    # -- routes ---------------------------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        try:
            checks = await gather_within(5, self.encoder.ready.remote(), self.animator.ready.remote(),
                                         self.renderer.ready.remote())  # fmt: skip
        except Exception as e:
            return JSONResponse({"ready": False, "detail": _message(e)}, status_code=503)
        return JSONResponse({"ready": all(checks)}, status_code=200 if all(checks) else 503)

    @app.get("/v1/attributes", dependencies=[Depends(_check_key)])
    async def attributes(self) -> dict:
        """Each attribute with its synonyms, whether it can be edited, and ``held_out_auroc``: how well its
        classifier read it on held-out faces, null when not measured; ``direction``: how an edit moves the
        code (the classifier's normal, or the label model's shift for that attribute alone)."""
        return {"attributes": [a | {"trained": a["name"] in self.trained, "held_out_auroc": self.aurocs.get(a["name"])}
                               for a in self.library],
                "alpha_range": [-self.max_alpha, self.max_alpha],
                "direction": self.attribute_library.direction}  # fmt: skip

    @app.post("/v1/references", dependencies=[Depends(_check_key)])
    async def references(self, image: FileField = None) -> dict:
        """Encode (detect, align, invert) a face once; reuse its ``reference_id`` in later requests."""
        t = time.perf_counter()
        _, info = await self._reference(image, None)
        return info | {"seconds": time.perf_counter() - t}

    @app.post("/v1/edit", dependencies=[Depends(_check_key)])
    async def edit(
        self, image: FileField = None, reference_id: TextField = None, edits: TextField = None, text: TextField = None
    ) -> Response:
        """The face with its attributes edited, in its own pose → PNG. Parsed edits in ``X-Edits``."""
        parsed = self._edits(edits, text)
        ref_id, _ = await self._reference(image, reference_id)
        frame = await self._downstream(partial(self.renderer.render.remote, ref_id, None, parsed))
        return Response(encode_png(Image.fromarray(frame)), media_type="image/png",
                        headers={"X-Edits": json.dumps(parsed), "X-Reference-Id": ref_id})  # fmt: skip

    @app.post("/v1/interpolate", dependencies=[Depends(_check_key)])
    async def interpolate(
        self,
        image_a: FileField = None,
        image_b: FileField = None,
        reference_a: TextField = None,
        reference_b: TextField = None,
        t: FloatField = None,
        frames: IntField = None,
    ) -> Response:
        """The face at ``t`` ∈ [0, 1] between a and b (PNG), or ``frames`` evenly spaced faces in a row."""
        if (t is None) == (frames is None):
            raise HTTPException(422, "give exactly one of t (a number in [0, 1]) or frames (2 to 16)")
        if t is not None and not 0.0 <= t <= 1.0:
            raise HTTPException(422, f"t: {t} is outside [0, 1]")
        if frames is not None and not 2 <= frames <= 16:
            raise HTTPException(422, f"frames: {frames} is outside [2, 16]")
        ts = [t] if t is not None else list(np.linspace(0.0, 1.0, frames))
        a, _ = await self._reference(image_a, reference_a)
        b, _ = await self._reference(image_b, reference_b)
        out = await self._downstream(partial(self.renderer.interpolate.remote, a, b, ts))
        return Response(encode_png(Image.fromarray(np.concatenate(list(out), axis=1))), media_type="image/png")

    async def _generate(self, ref_id: str, speech: np.ndarray, edits: dict[str, float],
                        progress: Callable[[float], None] | None = None) -> bytes:  # fmt: skip
        points = await self._downstream(partial(self.animator.motion.remote, ref_id, speech))
        T, frames, chunk = len(points), [], max(1, self.options.render_batch)

        def render(batch: range) -> Callable[[], Awaitable[list[np.ndarray]]]:
            return lambda: asyncio.gather(*(self.renderer.render.remote(ref_id, points[i], edits) for i in batch))

        for start in range(0, T, chunk):
            frames += await self._downstream(render(range(start, min(T, start + chunk))))
            if progress is not None:
                progress(len(frames) / T)
        return await asyncio.to_thread(encode_mp4, np.stack(frames), speech, SAMPLE_RATE, 25)

    async def _run_job(self, job: dict, ref_id: str, speech: np.ndarray, edits: dict[str, float]) -> None:
        changed, finished, stopped = asyncio.Event(), asyncio.Event(), asyncio.Event()

        def progress(done: float) -> None:
            job.update(state="running", progress=done)
            changed.set()

        work = asyncio.create_task(self._generate(ref_id, speech, edits, progress))
        writer = asyncio.create_task(self._keep_saved(job, changed, finished, stopped, work))
        try:
            data = await work
            if reason := await asyncio.to_thread(self.store.stopped, job):
                raise RunStoppedError(reason)
            await asyncio.to_thread(self.store.put_result, job["id"], data)
            job.update(state="done", progress=1.0)
        except asyncio.CancelledError:
            if not stopped.is_set():  # this replica stops: the job runs again elsewhere
                raise
        except RunStoppedError:
            stopped.set()
        except Exception as e:  # reported in the job, never lost
            job.update(state="failed", error=_message(e))
        finally:
            work.cancel()
            finished.set()
            changed.set()
            await writer  # its last write lands before the final one, never after it
        if not stopped.is_set():
            try:
                await asyncio.to_thread(self.store.save_job, job)
                return
            except RunStoppedError:
                pass
        logger.warning("job %s: run %d stopped: it was cancelled, or taken for lost and run again elsewhere",
                       job["id"], job.get("attempts", 1))  # fmt: skip

    async def _keep_saved(self, job: dict, changed: asyncio.Event, finished: asyncio.Event, stopped: asyncio.Event,
                          work: asyncio.Task) -> None:  # fmt: skip
        """The one writer of a running job's state: after each change of progress, and every quarter of
        ``job_stale_seconds`` without one, however long a step waits (a queue in front of the Renderer, a
        long motion call, replicas still starting). So a job falls silent only when its replica is gone, or
        cut off from storage. When the job is cancelled, or the run comes back after another replica has
        run the job again, its write is refused (``RunStoppedError``) and its work stops."""
        while not finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), self.options.job_stale_seconds / 4)
            changed.clear()
            if finished.is_set():
                return
            try:
                await asyncio.to_thread(self.store.save_job, job)
            except RunStoppedError:
                stopped.set()
                work.cancel()
                return
            except Exception as e:  # the next beat tries again
                logger.warning("job %s: saving its state failed: %s", job["id"], _message(e))

    def _background(self, work) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _sweep(self) -> None:
        """Delete expired jobs and references in the background, at most every ``sweep_seconds``."""
        if time.time() - self.swept > self.options.sweep_seconds:
            self.swept = time.time()
            self._background(self._expire())

    async def _expire(self) -> None:
        try:
            await asyncio.to_thread(self.store.expire_jobs, self.options.job_ttl_seconds)
            await asyncio.to_thread(self.store.expire_references, self.options.reference_ttl_seconds)
        except Exception as e:  # the next sweep tries again
            logger.warning("deleting expired jobs and references failed: %s", _message(e))

    async def _start_job(self, ref_id: str, speech: np.ndarray, edits: dict[str, float]) -> dict:
        info = {"reference_id": ref_id, "edits": edits, "audio_seconds": speech.size / SAMPLE_RATE, "attempts": 1}
        job = await asyncio.to_thread(self.store.new_job, info)
        await asyncio.to_thread(self.store.put_speech, job["id"], speech)  # to run it again if this replica stops
        self._background(self._run_job(job, ref_id, speech, edits))
        self._sweep()  # new jobs make room: expired ones go
        return job

    async def _media(self, form: MediaForm) -> tuple[str, np.ndarray, dict[str, float]]:
        """Checked edits, decoded speech, and the reference (encoded now or given by id)."""
        parsed = self._edits(form.edits, form.text)
        speech = await self._audio(form.audio)
        ref_id, _ = await self._reference(form.image, form.reference_id)
        return ref_id, speech, parsed

    def _accepted(self, job: dict) -> JSONResponse:
        return JSONResponse(self._public(job), status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})

    @app.post("/v1/generate", dependencies=[Depends(_check_key)])
    async def generate(self, form: Annotated[MediaForm, Depends()]) -> Response:
        """Image (or reference_id) + speech (+ edits) → mp4 (H.264 + AAC, 25 fps). Speech longer than
        ``sync_max_seconds`` becomes a job: 202 with its id and Location."""
        ref_id, speech, parsed = await self._media(form)
        if speech.size / SAMPLE_RATE > self.options.sync_max_seconds:
            return self._accepted(await self._start_job(ref_id, speech, parsed))
        data = await self._generate(ref_id, speech, parsed)
        return Response(data, media_type="video/mp4", headers={"X-Edits": json.dumps(parsed), "X-Reference-Id": ref_id})

    @app.post("/v1/jobs", status_code=202, dependencies=[Depends(_check_key)])
    async def create_job(self, form: Annotated[MediaForm, Depends()]) -> JSONResponse:
        """Image (or reference_id) + speech (+ edits) → a job id; poll it, then fetch the mp4."""
        ref_id, speech, parsed = await self._media(form)
        return self._accepted(await self._start_job(ref_id, speech, parsed))

    async def _job_or_404(self, job_id: str) -> dict:
        job = await asyncio.to_thread(self.store.job, job_id) if ID.match(job_id) else None
        # how long its state has gone unwritten, by the storage's clock: `updated` is the clock of the replica
        # that wrote it, which may differ from this one's by more than job_stale_seconds
        silent = await asyncio.to_thread(self.store.silent, job_id) if job is not None else None
        if job is None or silent is None:
            raise HTTPException(404, f"job {job_id}: unknown (or expired)")
        if silent > self.options.job_ttl_seconds:
            raise HTTPException(404, f"job {job_id}: expired (results are kept {self.options.job_ttl_seconds} s)")
        if job["state"] in ("queued", "running") and silent > self.options.job_stale_seconds:
            await self._restart(job)
        return job

    async def _restart(self, job: dict) -> None:
        """A job silent for ``job_stale_seconds``: the replica running it stopped. It runs again here from
        its stored speech, up to ``job_restarts`` times; past that, or with no speech stored, it failed.
        Of the polls that find it silent at once, on one replica or several, the one that claims the next
        run starts it; the others answer with the job as that run starts (``job`` is updated in place)."""
        if await asyncio.to_thread(self.store.cancelled, job["id"]):  # a run's write raced the cancellation
            await asyncio.to_thread(self.store.cancel, job)
            return
        while True:
            attempt = job.get("attempts", 1) + 1
            failed = {"state": "failed", "error": f"the replica running this job stopped (run {attempt - 1} time(s)); "
                                                  "submit it again"}  # fmt: skip
            if attempt > self.options.job_restarts + 1:
                job.update(failed)
                await asyncio.to_thread(self.store.save_job, job)
                return
            job.update(state="queued", progress=0.0, attempts=attempt)  # as the run that claims it starts
            if await asyncio.to_thread(self.store.claim_run, job["id"], attempt):
                break
            claimed = await asyncio.to_thread(self.store.claim_age, job["id"], attempt)
            if claimed is None or claimed <= self.options.job_stale_seconds:
                return  # another poll runs it; only the one that does reads the speech
            # claimed long ago, yet the state is still the run before's: its claimer stopped before it wrote
        speech = await asyncio.to_thread(self.store.speech, job["id"])
        if speech is None:
            job.update(failed)
            await asyncio.to_thread(self.store.save_job, job)
            return
        logger.warning("job %s: its replica stopped; running it again here", job["id"])
        await asyncio.to_thread(self.store.save_job, job)
        self._background(self._run_job(job, job["reference_id"], speech, job["edits"]))

    @staticmethod
    def _public(job: dict) -> dict:
        keys = ("id", "state", "progress", "error", "audio_seconds", "edits", "reference_id", "attempts", "created",
                "updated")  # fmt: skip
        return {k: job.get(k) for k in keys} | {"result": f"/v1/jobs/{job['id']}/result"}

    @app.get("/v1/jobs/{job_id}", dependencies=[Depends(_check_key)])
    async def job_state(self, job_id: str) -> dict:
        return self._public(await self._job_or_404(job_id))

    @app.delete("/v1/jobs/{job_id}", dependencies=[Depends(_check_key)])
    async def delete_job(self, job_id: str) -> Response:
        """A queued or running job is cancelled: its run stops within a quarter of ``job_stale_seconds``,
        and the job reads ``cancelled`` until it expires (200, the job). A finished one (done, failed or
        cancelled) is deleted with its result now (204)."""
        job = await asyncio.to_thread(self.store.job, job_id) if ID.match(job_id) else None
        if job is None:
            raise HTTPException(404, f"job {job_id}: unknown (or expired)")
        if job["state"] in ("queued", "running"):
            await asyncio.to_thread(self.store.cancel, job)
            return JSONResponse(self._public(job))
        await asyncio.to_thread(self.store.delete_job, job_id)
        return Response(status_code=204)

    @app.get("/v1/jobs/{job_id}/result", dependencies=[Depends(_check_key)])
    async def job_result(self, job_id: str) -> Response:
        job = await self._job_or_404(job_id)
        if job["state"] == "failed":
            raise HTTPException(409, f"job {job_id} failed: {job['error']}")
        if job["state"] == "cancelled":
            raise HTTPException(409, f"job {job_id} was cancelled")
        if job["state"] != "done":
            raise HTTPException(409, f"job {job_id} is {job['state']} ({job['progress']:.0%}); poll GET "
                                     f"/v1/jobs/{job_id}",
                                headers={"Retry-After": str(self.options.retry_after_seconds)})  # fmt: skip
        try:
            return Response(await asyncio.to_thread(self.store.result, job_id), media_type="video/mp4")
        except NotFoundError:  # deleted since its state was read
            raise HTTPException(
                404, f"job {job_id}: expired (results are kept {self.options.job_ttl_seconds} s)"
            ) from None
