import subprocess
import sys
from pathlib import Path

import pytest

from fet import storage


def test_local_round_trip_is_atomic(tmp_path):
    path = tmp_path / "a" / "b.bin"
    storage.write_bytes(path, b"data")
    assert storage.read_bytes(path) == b"data"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["b.bin"]  # no temp file left
    assert storage.list_files(tmp_path) == [str(path)]
    with pytest.raises(storage.StorageError, match="no such file"):
        storage.read_bytes(tmp_path / "missing")


def test_s3_round_trip(s3_bucket, tmp_path):
    uri = storage.join(s3_bucket, "dir", "x.txt")
    storage.write_text(uri, "hello")
    assert storage.exists(uri) and not storage.exists(uri + ".no")
    assert storage.read_text(uri) == "hello"
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "y.bin").write_bytes(b"\x00\x01")
    storage.upload_dir(tmp_path / "tree", storage.join(s3_bucket, "tree"))
    assert storage.list_files(storage.join(s3_bucket, "tree")) == [f"{s3_bucket}/tree/sub/y.bin"]
    local = storage.local_dir(storage.join(s3_bucket, "tree"), tmp_path / "dl")
    assert (local / "sub" / "y.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(storage.StorageError, match="no such object"):
        storage.read_bytes(storage.join(s3_bucket, "missing"))
    with pytest.raises(storage.StorageError, match="expected an s3://bucket/key URI"):
        storage.split_s3("/local/path")


def test_s3_copies_are_removed_after_one_load_or_when_the_process_exits(s3_bucket, tmp_path):
    """Libraries load weights and the MediaPipe model from local paths. A copy of an S3 object for one load
    is removed when the load is done; one kept for the process's life is in one folder per process, removed
    when the process exits (a server restarted on every deploy would otherwise fill its disk)."""
    storage.write_bytes(storage.join(s3_bucket, "w", "model.task"), b"weights")
    storage.write_bytes(storage.join(s3_bucket, "tree", "a", "config.json"), b"{}")
    local = storage.local_file(storage.join(s3_bucket, "w", "model.task"))
    assert local.name == "model.task" and local.read_bytes() == b"weights"
    assert local.is_relative_to(storage.download_root())
    assert storage.local_file(tmp_path / "x.bin") == tmp_path / "x.bin"  # local paths are used in place
    with pytest.raises(storage.StorageError, match="no such object"):
        storage.local_file(storage.join(s3_bucket, "w", "missing.task"))
    with storage.local_copy(storage.join(s3_bucket, "w", "model.task")) as f:
        assert f.read_bytes() == b"weights" and f.name == "model.task"
    with storage.local_copy(storage.join(s3_bucket, "tree"), tree=True) as d:
        assert (d / "a" / "config.json").read_bytes() == b"{}"
    assert not f.exists() and not d.exists()  # a copy for one load is gone when the block ends
    with storage.local_copy(tmp_path, tree=True) as same:
        assert same == tmp_path  # local paths are used in place
    assert tmp_path.is_dir()
    child = (
        "from fet import storage; "
        f"f = storage.local_file('{s3_bucket}/w/model.task'); d = storage.local_dir('{s3_bucket}/tree'); "
        "assert f.read_bytes() == b'weights' and (d / 'a' / 'config.json').is_file(); "
        "print(storage.download_root(), f, d)"
    )
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    paths = [Path(p) for p in out.stdout.split()]
    assert len(paths) == 3 and all(p.is_relative_to(paths[0]) for p in paths[1:])
    assert not any(p.exists() for p in paths), "the exited process left its S3 copies behind"
