"""The Serve application on a local Ray with a tiny saved bundle, over real HTTP: edit, generate, jobs,
reference reuse, concurrency, and a 4xx (never a 5xx) with a message for every kind of bad input."""

from __future__ import annotations

import io
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import pytest
import requests
from PIL import Image

from fet.audio.load import wav_bytes
from tests.conftest import media
from tests.fet.helpers import png_header
from tests.fet.talking_helpers import build_bundle, speech

pytestmark = pytest.mark.timeout(600)
KEY = "test-key-123"
SIZE = 0  # the bundle's image size, set by the server fixture
STAGE2_METRICS = {"val_auroc/Eyeglasses": 0.97, "val_auroc/Smiling": 0.5, "val_auroc_mean": 0.735}
BUNDLE = ""  # its directory, set by the server fixture
STATE = Path()  # the service's state directory, set by the server fixture


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from ray import serve

    from serve.app import run
    from serve.options import AppOptions, Scaling

    tmp = tmp_path_factory.mktemp("serve")
    bundle = build_bundle(tmp, metrics={"stage2": STAGE2_METRICS}, direction="label_model")
    global SIZE, BUNDLE, STATE
    BUNDLE, STATE = bundle, tmp / "state"
    SIZE = json.loads((tmp / "bundle" / "denoiser.json").read_text())["config"]["image_size"]
    (tmp / "key").write_text(KEY)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"GLOG_minloglevel": "2"}})  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # paths relative to this process's directory, which is not the one the replicas run in (Ray's, started above)
    opts = AppOptions(bundle="bundle", state_dir="state", api_key_file="key", max_payload_mb=1,
                      max_audio_seconds=5, sync_max_seconds=2.5, render_batch=8, sweep_seconds=1, job_stale_seconds=8,
                      encoder=Scaling(max_ongoing_requests=1, max_queued_requests=1))  # fmt: skip
    here = os.getcwd()
    os.chdir(tmp)
    try:
        run(opts, port=port)
    finally:
        os.chdir(here)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    yield url
    serve.shutdown()
    ray.shutdown()


def post(url: str, path: str, files=None, data=None, key: str | None = KEY, **kw) -> requests.Response:
    headers = {"X-API-Key": key} if key else {}
    return requests.post(f"{url}{path}", files=files, data=data, headers=headers, timeout=300, **kw)


@pytest.fixture(scope="module")
def face() -> bytes:
    return media("image/sadtalker_people_0.png").read_bytes()


def test_health_docs_and_attributes(server):
    assert requests.get(f"{server}/healthz").json() == {"status": "ok"}
    assert requests.get(f"{server}/readyz").json()["ready"] is True
    spec = requests.get(f"{server}/openapi.json").json()
    assert {"/v1/edit", "/v1/generate", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/interpolate"} <= set(spec["paths"])
    assert requests.get(f"{server}/docs").status_code == 200
    attrs = requests.get(f"{server}/v1/attributes", headers={"X-API-Key": KEY}).json()
    by_name = {a["name"]: a for a in attrs["attributes"]}
    glasses = by_name["Eyeglasses"]
    assert "glasses" in glasses["synonyms"] and attrs["alpha_range"] == [-1.0, 1.0]
    assert attrs["direction"] == "label_model"  # how the bundle's edits move the code
    # the held-out AUROC of each classifier, from the training metrics the bundle carries; null when unmeasured
    assert glasses["held_out_auroc"] == 0.97 and by_name["Smiling"]["held_out_auroc"] == 0.5
    assert by_name["Young"]["held_out_auroc"] is None and by_name["Young"]["trained"] is True


def test_edit_returns_png_and_reused_reference_is_faster(server, face):
    t = time.perf_counter()
    r = post(server, "/v1/edit", files={"image": ("me.png", face)}, data={"edits": json.dumps({"glasses": 0.5})})
    first = time.perf_counter() - t
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    assert Image.open(io.BytesIO(r.content)).size == (SIZE, SIZE)  # the bundle's image size
    assert json.loads(r.headers["X-Edits"]) == {"Eyeglasses": 0.5}
    from fet.pipeline import FaceEditTalkerPipeline  # Serve renders exactly what the library renders

    pipe = FaceEditTalkerPipeline.from_bundle(BUNDLE)
    want, _ = pipe.edit(pipe.encode(face), {"Eyeglasses": 0.5})
    got = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)
    assert np.abs(got - want.astype(int)).max() <= 1
    ref = r.headers["X-Reference-Id"]
    from fet.references import inversion_fingerprint, reference_id

    assert ref == reference_id(inversion_fingerprint(pipe), face)  # kept under what inverted it, not the path
    t = time.perf_counter()
    r2 = post(server, "/v1/edit", data={"reference_id": ref, "text": "make them smile"})
    reused = time.perf_counter() - t
    assert r2.status_code == 200 and json.loads(r2.headers["X-Edits"]) == {"Smiling": 0.3}
    assert reused < first, (reused, first)  # no detection and no inversion the second time


def test_generate_returns_mp4_with_matching_streams(server, face):
    r = post(server, "/v1/generate", files={"image": ("me.png", face), "audio": ("s.wav", wav_bytes(speech(2.0)))},
             data={"text": "blond hair"})  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4", r.text[:500]
    with av.open(io.BytesIO(r.content)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        frames = sum(1 for _ in c.decode(v))
        assert frames == 50 and abs(float(a.duration * a.time_base) - 2.0) < 0.1


def test_job_flow_reports_progress_and_result(server, face):
    ref = post(server, "/v1/references", files={"image": ("me.png", face)}).json()["reference_id"]
    r = post(server, "/v1/jobs", files={"audio": ("s.wav", wav_bytes(speech(3.0)))}, data={"reference_id": ref})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["Location"] == f"/v1/jobs/{job['id']}"
    states = []
    deadline = time.time() + 240
    while time.time() < deadline:
        s = requests.get(f"{server}/v1/jobs/{job['id']}", headers={"X-API-Key": KEY}).json()
        states.append((s["state"], s["progress"]))
        if s["state"] in ("done", "failed"):
            break
        time.sleep(0.2)
    assert states[-1] == ("done", 1.0), states
    res = requests.get(f"{server}/v1/jobs/{job['id']}/result", headers={"X-API-Key": KEY})
    assert res.status_code == 200 and res.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(res.content)) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 75
    # audio longer than sync_max_seconds on /v1/generate becomes a job too
    long = post(server, "/v1/generate", files={"audio": ("s.wav", wav_bytes(speech(3.0)))}, data={"reference_id": ref})
    assert long.status_code == 202 and long.json()["state"] in ("queued", "running", "done")


def test_an_expired_job_is_deleted_when_new_jobs_come(server, face):
    ref = post(server, "/v1/references", files={"image": ("me.png", face)}).json()["reference_id"]

    def submit() -> str:
        r = post(server, "/v1/jobs", files={"audio": ("s.wav", wav_bytes(speech(1.0)))}, data={"reference_id": ref})
        assert r.status_code == 202, r.text
        return r.json()["id"]

    old = submit()
    deadline = time.time() + 120
    while requests.get(f"{server}/v1/jobs/{old}", headers={"X-API-Key": KEY}).json()["state"] != "done":
        assert time.time() < deadline
        time.sleep(0.2)
    state, two_hours_ago = STATE / "jobs" / old / "state.json", time.time() - 7200  # untouched since
    state.write_text(json.dumps(json.loads(state.read_text()) | {"updated": two_hours_ago}))
    for f in (STATE / "jobs" / old).iterdir():
        os.utime(f, (two_hours_ago, two_hours_ago))
    gone = requests.get(f"{server}/v1/jobs/{old}", headers={"X-API-Key": KEY})
    assert gone.status_code == 404 and "expired" in gone.json()["detail"]
    assert (STATE / "jobs" / old / "result.mp4").exists()  # still on disk until a new job comes
    time.sleep(1.1)  # the sweep interval (sweep_seconds)
    submit()
    deadline = time.time() + 60
    while (STATE / "jobs" / old).exists():
        assert time.time() < deadline, "the expired job was never deleted"
        time.sleep(0.2)


def test_a_reference_unused_for_its_time_to_live_is_deleted_and_comes_back_when_encoded_again(server, face):
    img = Image.open(io.BytesIO(face)).convert("RGB")
    img.putpixel((1, 1), (1, 2, 3))  # its own reference
    own = png_bytes(img)
    ref = post(server, "/v1/references", files={"image": ("own.png", own)}).json()["reference_id"]
    stored = STATE / "refs" / f"{ref}.safetensors"
    eight_days_ago = time.time() - 8 * 24 * 3600  # the time to live is a week
    os.utime(stored, (eight_days_ago, eight_days_ago))
    time.sleep(1.1)  # the sweep interval (sweep_seconds)
    assert post(server, "/v1/references", files={"image": ("me.png", face)}).status_code == 200  # starts a sweep
    deadline = time.time() + 60
    while stored.exists():
        assert time.time() < deadline, "the unused reference was never deleted"
        time.sleep(0.2)
    gone = post(server, "/v1/edit", data={"reference_id": ref, "text": "glasses"})
    assert gone.status_code == 404 and "encode the image again" in gone.json()["detail"], gone.text
    again = post(server, "/v1/references", files={"image": ("own.png", own)})
    assert again.status_code == 200 and again.json()["reference_id"] == ref and stored.exists()
    assert post(server, "/v1/edit", data={"reference_id": ref, "text": "glasses"}).status_code == 200


def streamed(url: str, path: str, name: str, data: bytes) -> requests.Response:
    """POST one multipart file field in 64 KiB chunks, without a Content-Length (Transfer-Encoding: chunked)."""
    head = (
        f'--fet\r\nContent-Disposition: form-data; name="{name}"; filename="f.png"\r\nContent-Type: image/png\r\n\r\n'
    )
    body = head.encode() + data + b"\r\n--fet--\r\n"
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    headers = {"X-API-Key": KEY, "Content-Type": "multipart/form-data; boundary=fet"}
    return requests.post(f"{url}{path}", data=chunks, headers=headers, timeout=300)


def test_a_streamed_upload_is_held_to_the_payload_limit(server, face):
    """A body without a Content-Length is counted as it arrives and refused once over the limit (1 MB)."""
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), np.uint8)  # 1.5 MB as a PNG
    big = streamed(server, "/v1/references", "image", png_bytes(Image.fromarray(noise)))
    assert big.status_code == 413 and "exceeds the limit of 1048576 bytes" in big.json()["detail"], big.text
    small = streamed(server, "/v1/references", "image", face)
    assert small.status_code == 200 and len(small.json()["reference_id"]) == 32, small.text


def test_a_job_whose_replica_died_is_reported_failed(server):
    from serve.store import StateStore

    job = StateStore(str(STATE)).new_job({"reference_id": "0" * 32, "edits": {}, "audio_seconds": 3.0})
    state = STATE / "jobs" / job["id"] / "state.json"  # running, and silent for 10 min: its replica is gone
    state.write_text(json.dumps(job | {"state": "running", "progress": 0.4, "updated": time.time() - 600}))
    os.utime(state, (time.time() - 600,) * 2)
    r = requests.get(f"{server}/v1/jobs/{job['id']}", headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json()["state"] == "failed" and "submit it again" in r.json()["error"]
    res = requests.get(f"{server}/v1/jobs/{job['id']}/result", headers={"X-API-Key": KEY})
    assert res.status_code == 409 and "failed" in res.json()["detail"]


def test_a_job_is_judged_silent_by_the_storage_clock_not_by_the_clock_of_the_replica_that_wrote_it(server):
    """Replicas on nodes whose clocks differ: each job's `updated` is the writing replica's clock. A running
    job written just now by a replica whose clock is 10 min behind is alive: it is not run again (before, a
    poll took it for lost, and its runs took each other over until the job failed). One silent for 10 min,
    written by a replica whose clock is 10 min ahead, is lost: it fails at once (before, it waited 20 min)."""
    from serve.store import StateStore

    store = StateStore(str(STATE))
    info = {"reference_id": "0" * 32, "edits": {}, "audio_seconds": 3.0, "attempts": 1}
    alive, lost = (store.new_job(info) for _ in range(2))
    (STATE / "jobs" / alive["id"] / "state.json").write_text(
        json.dumps(alive | {"state": "running", "progress": 0.4, "updated": time.time() - 600}))  # fmt: skip
    state = STATE / "jobs" / lost["id"] / "state.json"
    state.write_text(json.dumps(lost | {"state": "running", "progress": 0.4, "updated": time.time() + 600}))
    os.utime(state, (time.time() - 600,) * 2)
    for _ in range(2):
        r = requests.get(f"{server}/v1/jobs/{alive['id']}", headers={"X-API-Key": KEY}, timeout=30)
        assert r.status_code == 200 and r.json()["state"] == "running" and r.json()["attempts"] == 1, r.text
    assert not (STATE / "jobs" / alive["id"] / "run-2").exists()
    r = requests.get(f"{server}/v1/jobs/{lost['id']}", headers={"X-API-Key": KEY}, timeout=30)
    assert r.status_code == 200 and r.json()["state"] == "failed" and "submit it again" in r.json()["error"], r.text


def test_a_job_whose_next_run_was_claimed_by_a_replica_that_stopped_at_once_runs_again(server, face):
    """A replica found the job silent and claimed its second run, then stopped before it wrote the job's
    state: the state still shows run 1, silent, and run 2's claim is older than ``job_stale_seconds``. The
    next poll runs it a third time instead of waiting for run 2 for ever."""
    from serve.store import StateStore

    ref = post(server, "/v1/references", files={"image": ("me.png", face)}).json()["reference_id"]
    store = StateStore(str(STATE))
    job = store.new_job({"reference_id": ref, "edits": {}, "audio_seconds": 2.0, "attempts": 1})
    store.put_speech(job["id"], speech(2.0))
    assert store.claim_run(job["id"], 2)
    os.utime(STATE / "jobs" / job["id"] / "run-2", (time.time() - 600,) * 2)
    state = STATE / "jobs" / job["id"] / "state.json"  # run 1: running, silent for 10 min
    state.write_text(json.dumps(job | {"state": "running", "progress": 0.4, "updated": time.time() - 600}))
    os.utime(state, (time.time() - 600,) * 2)
    deadline = time.time() + 120
    while (s := requests.get(f"{server}/v1/jobs/{job['id']}", headers={"X-API-Key": KEY}, timeout=30).json())[
            "state"] not in ("done", "failed"):  # fmt: skip
        assert time.time() < deadline, s
        time.sleep(0.2)
    assert s["state"] == "done" and s["attempts"] == 3, s


def test_a_store_that_fails_to_read_a_job_is_a_503_to_retry_not_an_unknown_job_or_a_500(server):
    """The job's state cannot be read (here its file is a folder; on S3, the server is unreachable): the
    answer is a 503 with Retry-After, which ``Client.wait`` polls through, and no storage detail leaks."""
    from serve.store import StateStore

    job = StateStore(str(STATE)).new_job({"reference_id": "0" * 32, "edits": {}, "audio_seconds": 3.0})
    state = STATE / "jobs" / job["id"] / "state.json"
    state.unlink()
    state.mkdir()
    r = requests.get(f"{server}/v1/jobs/{job['id']}", headers={"X-API-Key": KEY}, timeout=30)
    assert r.status_code == 503 and r.headers["Retry-After"], (r.status_code, r.text)
    assert "cannot be reached just now; retry" in r.json()["detail"] and str(STATE) not in r.text
    state.rmdir()
    state.parent.rmdir()


def test_a_job_whose_ingress_was_killed_runs_again_and_finishes(server, face):
    """The ingress replica running a job is killed (a real kill) while the video renders. Once the job has
    been silent for ``job_stale_seconds`` (8 s here), the next poll runs it again from its stored
    speech, on the ingress Serve started in its place, and it finishes with the whole video, which the
    client waiting for it receives."""
    import ray

    from fet.client import Client

    ref = post(server, "/v1/references", files={"image": ("me.png", face)}).json()["reference_id"]
    job = post(server, "/v1/jobs", files={"audio": ("s.wav", wav_bytes(speech(4.8)))}, data={"reference_id": ref})
    assert job.status_code == 202, job.text
    url = f"{server}/v1/jobs/{job.json()['id']}"

    def state() -> dict | None:
        try:
            r = requests.get(url, headers={"X-API-Key": KEY}, timeout=10)
        except requests.RequestException:  # the ingress is being replaced
            return None
        return r.json() if r.status_code == 200 else None

    deadline = time.time() + 240
    while (s := state()) is None or s["progress"] == 0:
        assert time.time() < deadline
        time.sleep(0.02)
    for a in ray.util.list_named_actors(all_namespaces=True):
        if "Ingress" in a["name"]:
            ray.kill(ray.get_actor(a["name"], a["namespace"]))
    assert s["state"] == "running" and s["progress"] < 1, s
    video = Client(server, api_key=KEY).wait(job.json()["id"], timeout=240)
    assert state()["attempts"] == 2
    with av.open(io.BytesIO(video)) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 120


@pytest.mark.slow
def test_the_client_waits_for_a_job_through_a_restart_of_the_http_proxy(server, face):
    """Serve's HTTP proxy is killed (a real kill) while a job renders: until Serve has started it again the
    port refuses connections. The job runs on in its replica, and ``Client.wait`` keeps polling through
    the gap and receives the whole video."""
    import ray

    from fet.client import Client

    client = Client(server, api_key=KEY)
    job_id = client.submit(client.encode(face), wav_bytes(speech(4.8)))
    proxies = [(a["name"], a["namespace"]) for a in ray.util.list_named_actors(all_namespaces=True)
               if "PROXY" in a["name"].upper()]  # fmt: skip
    assert proxies
    for name, namespace in proxies:
        ray.kill(ray.get_actor(name, namespace))
    refused, deadline = False, time.time() + 10
    while not refused and time.time() < deadline:  # the kill lands within moments; a new proxy takes seconds
        try:
            requests.get(f"{server}/healthz", timeout=5)
            time.sleep(0.05)
        except requests.ConnectionError:
            refused = True
    video = client.wait(job_id, timeout=240)
    assert refused, "the port never refused a connection; the test did not test the gap"
    with av.open(io.BytesIO(video)) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 120


@pytest.mark.slow
def test_a_job_held_up_by_a_stalled_renderer_is_not_taken_for_lost_and_runs_once(server, face):
    """The Renderer's replica stops answering for longer than ``job_stale_seconds`` (8 s here) while a job
    renders: its process is paused (SIGSTOP), as a replica is held up by a long queue or a stuck device.
    The ingress running the job is alive and keeps its state fresh, so no poll takes the job for lost and
    runs it a second time; it finishes once the Renderer goes on."""
    import signal

    import ray

    replicas = [ray.get_actor(a["name"], a["namespace"]) for a in ray.util.list_named_actors(all_namespaces=True)
                if "Renderer" in a["name"]]  # fmt: skip
    pids = [ray.get(r.__ray_call__.remote(lambda replica: os.getpid()), timeout=30) for r in replicas]
    assert pids
    ref = post(server, "/v1/references", files={"image": ("me.png", face)}).json()["reference_id"]
    job = post(server, "/v1/jobs", files={"audio": ("s.wav", wav_bytes(speech(4.8)))}, data={"reference_id": ref})
    assert job.status_code == 202, job.text

    def state() -> dict:
        return requests.get(f"{server}/v1/jobs/{job.json()['id']}", headers={"X-API-Key": KEY}, timeout=30).json()

    deadline = time.time() + 120
    while state()["progress"] == 0:  # rendering: its first frames are done
        assert time.time() < deadline
        time.sleep(0.02)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        stalled, seen = time.time(), []
        while time.time() - stalled < 12:  # polled all along, past the 8 s after which a silent job is lost
            seen.append(state())
            time.sleep(0.5)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert {(s["state"], s["attempts"]) for s in seen} == {("running", 1)}
    assert len({s["progress"] for s in seen[4:]}) == 1  # after the first 2 s: nothing rendered while paused
    while (s := state())["state"] not in ("done", "failed"):
        assert time.time() < deadline + 60
        time.sleep(0.2)
    assert s["state"] == "done" and s["attempts"] == 1, s


@pytest.mark.slow
def test_a_run_taken_for_lost_and_run_again_elsewhere_stops_and_never_writes_over_the_later_run(server, face):
    """While run 1 of a job renders, another replica claims run 2 (as one does when run 1 has been silent
    for ``job_stale_seconds``: its replica was cut off from storage, and now it is back). Run 1 must stop
    and leave the job's state to run 2: no poll sees run 1 again. Here the other replica claims run 2 and
    writes its state through the store, then stops itself; so the job falls silent once more, and a poll
    runs it a third time, here, to the whole video."""
    from serve.store import StateStore

    store = StateStore(str(STATE))
    ref = post(server, "/v1/references", files={"image": ("me.png", face)}).json()["reference_id"]
    job = post(server, "/v1/jobs", files={"audio": ("s.wav", wav_bytes(speech(4.8)))}, data={"reference_id": ref})
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]

    def state() -> dict:
        return requests.get(f"{server}/v1/jobs/{job_id}", headers={"X-API-Key": KEY}, timeout=30).json()

    deadline = time.time() + 120
    while (s := state())["progress"] == 0:  # run 1 renders: its first frames are done
        assert time.time() < deadline
        time.sleep(0.02)
    assert s["state"] == "running" and s["progress"] < 1 and s["attempts"] == 1, s
    assert store.claim_run(job_id, 2)
    time.sleep(0.5)  # a write of run 1 already on its way when the claim landed
    store.save_job(store.job(job_id) | {"state": "queued", "progress": 0.0, "attempts": 2})
    seen = []
    while (s := state())["state"] not in ("done", "failed"):
        seen.append(s["attempts"])
        assert time.time() < deadline + 120
        time.sleep(0.2)
    assert seen and min(seen) >= 2 and seen == sorted(seen), seen  # never run 1's state again
    assert s["state"] == "done" and s["attempts"] == 3, s
    with av.open(io.BytesIO(requests.get(f"{server}/v1/jobs/{job_id}/result", headers={"X-API-Key": KEY},
                                         timeout=30).content)) as c:  # fmt: skip
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 120


def test_a_cancelled_job_stops_and_stays_cancelled_and_a_finished_one_is_deleted(server, face):
    """DELETE on a running job cancels it: its run stops writing at its next step (no state over the
    cancellation, no video), polls and ``Client.wait`` say it was cancelled. DELETE on it once more deletes
    it: 204, then 404."""
    from fet.client import Client, ServiceError

    client = Client(server, api_key=KEY)
    job_id = client.submit(client.encode(face), wav_bytes(speech(4.8)))
    deadline = time.time() + 120
    while client.job(job_id)["progress"] == 0:  # rendering
        assert time.time() < deadline
        time.sleep(0.02)
    cancelled = client.cancel(job_id)
    assert cancelled["state"] == "cancelled" and cancelled["progress"] < 1, cancelled
    state = STATE / "jobs" / job_id / "state.json"
    time.sleep(0.5)  # a write of the run already on its way when the cancellation landed
    written = state.stat().st_mtime
    seen = []
    for _ in range(16):  # 4 s: two beats of the run's writer (job_stale_seconds / 4 = 2 s) and its next batches
        seen.append(client.job(job_id)["state"])
        time.sleep(0.25)
    assert set(seen) == {"cancelled"} and state.stat().st_mtime == written, seen
    assert not (STATE / "jobs" / job_id / "result.mp4").exists()
    r = requests.get(f"{server}/v1/jobs/{job_id}/result", headers={"X-API-Key": KEY}, timeout=30)
    assert r.status_code == 409 and "was cancelled" in r.json()["detail"]
    with pytest.raises(ServiceError, match="was cancelled"):
        client.wait(job_id, timeout=30)
    assert client.cancel(job_id) is None  # finished: deleted
    r = requests.get(f"{server}/v1/jobs/{job_id}", headers={"X-API-Key": KEY}, timeout=30)
    assert r.status_code == 404 and not (STATE / "jobs" / job_id).exists()
    r = requests.delete(f"{server}/v1/jobs/{'0' * 32}", headers={"X-API-Key": KEY}, timeout=30)
    assert r.status_code == 404 and "unknown" in r.json()["detail"]


def test_a_replica_killed_while_it_renders_is_replaced_and_no_video_is_lost(server, face):
    """The Renderer's replica is killed (a real kill) in the middle of a job's video, with two more videos
    asked for at once: Serve replaces it, the ingress sends the calls it held again, and every video
    comes out whole."""
    import ray

    ref = post(server, "/v1/references", files={"image": ("me.png", face)}).json()["reference_id"]
    job = post(server, "/v1/jobs", files={"audio": ("s.wav", wav_bytes(speech(4.8)))}, data={"reference_id": ref})
    assert job.status_code == 202, job.text

    def state() -> dict:
        return requests.get(f"{server}/v1/jobs/{job.json()['id']}", headers={"X-API-Key": KEY}).json()

    def generate() -> requests.Response:
        return post(server, "/v1/generate", files={"audio": ("s.wav", wav_bytes(speech(2.4)))},
                    data={"reference_id": ref})  # fmt: skip

    (name, namespace), = [(a["name"], a["namespace"]) for a in ray.util.list_named_actors(all_namespaces=True)
                          if "Renderer" in a["name"]]  # fmt: skip
    deadline = time.time() + 120
    while (progress := state()["progress"]) == 0:  # the job is rendering: its first frames are done
        assert time.time() < deadline
        time.sleep(0.02)
    with ThreadPoolExecutor(2) as pool:
        videos = [pool.submit(generate) for _ in range(2)]
        ray.kill(ray.get_actor(name, namespace))
        assert progress < 1, "the job was done before the kill"
        for r in (v.result() for v in videos):
            assert r.status_code == 200, (r.status_code, r.text[:300])
            with av.open(io.BytesIO(r.content)) as c:
                assert sum(1 for _ in c.decode(c.streams.video[0])) == 60
    while (s := state())["state"] not in ("done", "failed"):
        assert time.time() < deadline
        time.sleep(0.2)
    assert s["state"] == "done", s
    res = requests.get(f"{server}/v1/jobs/{job.json()['id']}/result", headers={"X-API-Key": KEY})
    with av.open(io.BytesIO(res.content)) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 120


def test_a_frame_whose_reference_is_gone_fails_alone_and_its_batch_renders_the_rest(server, face):
    """The Renderer batches frames of concurrent requests. A frame whose reference cannot be loaded (deleted
    after the ingress checked it; sent straight to the Renderer here) gets its own error, and the other
    requests' frames in the same batch are rendered."""
    from ray import serve

    ref = post(server, "/v1/references", files={"image": ("me.png", face)}).json()["reference_id"]
    renderer = serve.get_deployment_handle("Renderer", app_name="faceedittalker")
    calls = [renderer.render.remote("0" * 32 if i == 3 else ref, None, {}) for i in range(8)]  # one batch (8)
    results = []
    for call in calls:
        try:
            results.append(call.result(timeout_s=120))
        except Exception as e:
            results.append(e)
    assert "unknown; encode the image first" in str(results[3])
    assert all(isinstance(r, np.ndarray) and r.shape == (SIZE, SIZE, 3) for i, r in enumerate(results) if i != 3)


def test_a_full_queue_answers_503_with_retry_after_and_the_client_waits_its_turn(server, face):
    from fet.client import Client

    def variant(i: int) -> bytes:  # the same face, another image: each needs its own inversion
        img = Image.open(io.BytesIO(face)).convert("RGB")
        img.putpixel((0, 0), (i, 255 - i, 7))
        return png_bytes(img)

    with ThreadPoolExecutor(6) as pool:  # the Encoder takes one and queues one
        out = list(pool.map(lambda i: post(server, "/v1/references", files={"image": ("f.png", variant(i))}),
                            range(6)))  # fmt: skip
    busy = [r for r in out if r.status_code == 503]
    assert busy and all(r.status_code in (200, 503) for r in out), [(r.status_code, r.text[:300]) for r in out]
    assert busy[0].headers.get("Retry-After") == "2" and "capacity" in busy[0].json()["detail"], (
        busy[0].headers,
        busy[0].text,
    )
    client = Client(server, api_key=KEY)
    with ThreadPoolExecutor(6) as pool:  # the client retries after Retry-After until the service has room
        refs = list(pool.map(lambda i: client.encode(variant(100 + i)), range(6)))
    assert len(set(refs)) == 6


def test_twenty_concurrent_requests_all_succeed(server, face):
    ref = post(server, "/v1/references", files={"image": ("me.png", face)}).json()["reference_id"]
    edits = ["glasses", "smile", "blond hair", "a hat", "bangs"]
    with ThreadPoolExecutor(20) as pool:
        out = list(pool.map(lambda i: post(server, "/v1/edit", data={"reference_id": ref, "text": edits[i % 5]}),
                            range(20)))  # fmt: skip
    assert [r.status_code for r in out] == [200] * 20


def test_bad_inputs_get_4xx_with_a_message(server, face):
    good_audio = ("s.wav", wav_bytes(speech(1.0)))
    no_face = png_bytes(Image.fromarray(np.tile(np.linspace(0, 255, 128, dtype=np.uint8), (128, 1))).convert("RGB"))
    cases = {
        "empty body": post(server, "/v1/edit"),
        "wrong content type": requests.post(f"{server}/v1/edit", json={"image": "x"}, headers={"X-API-Key": KEY}),
        "truncated png": post(server, "/v1/edit", files={"image": ("a.png", face[: len(face) // 2])}),
        "text named .png": post(server, "/v1/edit", files={"image": ("a.png", b"hello, I am text\n" * 20)}),
        "0-second audio": post(server, "/v1/generate", files={"image": ("a.png", face),
                                                              "audio": ("s.wav", wav_bytes(np.zeros(0)))}),
        "audio over limit": post(server, "/v1/generate", files={"image": ("a.png", face),
                                                                "audio": ("s.wav", wav_bytes(speech(6.0)))}),
        "no face": post(server, "/v1/edit", files={"image": ("a.png", no_face)}),
        "unknown attribute": post(server, "/v1/edit", files={"image": ("a.png", face)},
                                  data={"edits": json.dumps({"wings": 0.5})}),
        "alpha out of range": post(server, "/v1/edit", files={"image": ("a.png", face)},
                                   data={"edits": json.dumps({"Eyeglasses": 3.0})}),
        "oversized payload": post(server, "/v1/edit", files={"image": ("a.png", b"\x89PNG" + bytes(2 * 1024 * 1024))}),
        "too many pixels": post(server, "/v1/edit", files={"image": ("a.png", png_header(5000))}),
        "decompression bomb": post(server, "/v1/edit", files={"image": ("a.png", png_header(15000))}),
        "missing api key": post(server, "/v1/edit", files={"image": ("a.png", face)}, key=None),
        "unknown job": requests.get(f"{server}/v1/jobs/{'0' * 32}", headers={"X-API-Key": KEY}),
        "bad reference id": post(server, "/v1/generate", files={"audio": good_audio}, data={"reference_id": "../x"}),
    }  # fmt: skip
    expected = {"missing api key": 401, "oversized payload": 413, "audio over limit": 413, "unknown job": 404,
                "too many pixels": 413, "decompression bomb": 413}  # fmt: skip
    for name, r in cases.items():
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:300])
        if name in expected:
            assert r.status_code == expected[name], (name, r.status_code, r.text)
        detail = r.json()["detail"]
        assert detail and "Traceback" not in str(detail), (name, detail)
    assert "face" in cases["no face"].json()["detail"].lower()
    assert "wings" in cases["unknown attribute"].json()["detail"]
    # PIL's own message names the server's buffer object (<_io.BytesIO object at 0x...>), not the upload
    assert cases["text named .png"].status_code == 415 and cases["text named .png"].json()["detail"] == (
        "image: not a readable PNG, JPEG or WebP image (no image format PIL knows)")  # fmt: skip
    assert requests.get(f"{server}/healthz").status_code == 200


def test_python_client(server, face):
    from fet.client import Client, ServiceError

    c = Client(server, api_key=KEY)
    assert c.health()
    ref = c.encode(face)
    assert Image.open(io.BytesIO(c.edit(ref, {"Eyeglasses": 0.4}))).size == (SIZE, SIZE)
    strip = Image.open(io.BytesIO(c.interpolate(ref, media("image/sadtalker_happy.png").read_bytes(), frames=3)))
    assert strip.size == (3 * SIZE, SIZE)
    from fet.pipeline import FaceEditTalkerPipeline

    pipe = FaceEditTalkerPipeline.from_bundle(BUNDLE)  # t = 0 is the first face itself
    own = pipe.edit(pipe.encode(face))[0].astype(int)
    assert np.abs(np.asarray(strip.convert("RGB"))[:, :SIZE].astype(int) - own).max() <= 1
    mp4 = c.generate(ref, wav_bytes(speech(1.0)), text="smile")
    with av.open(io.BytesIO(mp4)) as v:
        assert sum(1 for _ in v.decode(v.streams.video[0])) == 25
    with pytest.raises(ServiceError) as e:
        Client(server, api_key="wrong").edit(ref, text="glasses")
    assert e.value.status == 401
