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
