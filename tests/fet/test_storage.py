import os
import stat
import threading
import time

import numpy as np
import pytest

from fet import storage
from fet.media.mp4 import Mp4Writer
from tests.conftest import point_s3_at_nothing


def test_local_round_trip_is_atomic(tmp_path):
    path = tmp_path / "a" / "b.bin"
    storage.write_bytes(path, b"data")
    assert storage.read_bytes(path) == b"data"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["b.bin"]  # no temp file left
    assert storage.list_files(tmp_path) == [str(path)]
    with pytest.raises(storage.StorageError, match="no such file"):
        storage.read_bytes(tmp_path / "missing")
    storage.delete(path)
    storage.delete(path)  # already gone: no error
    assert not path.exists()


def test_s3_round_trip(s3_bucket, tmp_path):
    uri = storage.join(s3_bucket, "dir", "x.txt")
    storage.write_text(uri, "hello")
    assert storage.exists(uri) and not storage.exists(uri + ".no")
    assert storage.read_text(uri) == "hello"
    storage.delete(uri)
    storage.delete(uri)  # already gone: no error
    assert not storage.exists(uri)
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


def test_local_copy_of_s3_objects_is_gone_after_the_block(s3_bucket, tmp_path):
    """Libraries that load only from a path get a copy of an S3 object for the length of the load; nothing is
    left behind, as a process Ray kills (a Train worker, a Serve replica) runs no clean-up of its own."""
    storage.write_bytes(storage.join(s3_bucket, "w", "model.task"), b"weights")
    storage.write_bytes(storage.join(s3_bucket, "tree", "a", "config.json"), b"{}")
    with storage.local_copy(storage.join(s3_bucket, "w", "model.task")) as f:
        assert f.read_bytes() == b"weights" and f.name == "model.task"
    with storage.local_copy(storage.join(s3_bucket, "tree"), tree=True) as d:
        assert (d / "a" / "config.json").read_bytes() == b"{}"
    assert not f.exists() and not d.exists()
    with pytest.raises(RuntimeError), storage.local_copy(storage.join(s3_bucket, "w", "model.task")) as f:
        raise RuntimeError("a failed load")
    assert not f.exists()
    with storage.local_copy(tmp_path, tree=True) as same:
        assert same == tmp_path  # local paths are used in place
    assert tmp_path.is_dir()
    with pytest.raises(storage.StorageError, match="no such object"), storage.local_copy(f"{s3_bucket}/w/none.task"):
        pass


def test_a_destination_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    storage.check_writable(tmp_path / "new" / "out.mp4")  # a folder that does not exist yet is made
    assert (tmp_path / "new").is_dir() and list((tmp_path / "new").iterdir()) == []  # the probe is gone
    (tmp_path / "a_file").write_bytes(b"x")
    with pytest.raises(
        storage.StorageError, match=r"a_file/out.mp4: cannot write there \(.*a_file is a file, not a folder\)"
    ):
        storage.check_writable(tmp_path / "a_file" / "out.mp4")
    with pytest.raises(storage.StorageError, match=r"cannot write there \(.*a_file is a file, not a folder\)"):
        storage.check_writable(tmp_path / "a_file" / "deeper" / "out.mp4")
    with pytest.raises(storage.StorageError, match="is a folder; expected a file's path"):
        storage.check_writable(tmp_path / "new")
    with pytest.raises(storage.StorageError, match="cannot write there"):
        storage.check_writable("/proc/out.mp4")  # a file system that takes no new files, even from root
    for uri in ("s3://bucket", "s3://bucket/", "s3://bucket/videos/"):
        with pytest.raises(storage.StorageError, match="expected s3://bucket/key"):
            storage.check_writable(uri)
    storage.check_writable("s3://bucket/videos/out.mp4")


def test_create_new_writes_only_where_nothing_is(tmp_path):
    path = tmp_path / "claims" / "run-2"
    assert storage.create_new(path, b"mine") and not storage.create_new(path, b"theirs")
    assert storage.read_bytes(path) == b"mine"  # the loser wrote nothing


def test_storage_that_cannot_answer_is_an_error_never_taken_for_a_missing_file(s3_bucket, tmp_path, monkeypatch):
    """A missing file or object is a ``NotFoundError`` and ``exists`` is False; an S3 endpoint that cannot
    be reached, or a path that cannot be read, is a plain ``StorageError`` from every call, ``exists``
    included: the caller must not read "not there" (a job unknown, a reference to encode again)."""
    missing = storage.join(s3_bucket, "none.bin")
    assert not storage.exists(missing)
    for where in (missing, str(tmp_path / "none.bin")):
        with pytest.raises(storage.NotFoundError):
            storage.read_bytes(where)
        with pytest.raises(storage.NotFoundError):
            storage.touch(where)
    with pytest.raises(storage.NotFoundError):
        storage.ages(tmp_path / "no folder")
    (tmp_path / "a folder.bin").mkdir()
    with pytest.raises(storage.StorageError, match="a folder.bin: cannot read it") as e:
        storage.read_bytes(tmp_path / "a folder.bin")
    assert not isinstance(e.value, storage.NotFoundError)

    point_s3_at_nothing(monkeypatch)
    for call in (storage.exists, storage.read_bytes, storage.touch):
        with pytest.raises(storage.StorageError, match="none.bin: Could not connect") as e:
            call(missing)
        assert not isinstance(e.value, storage.NotFoundError), call


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_written_files_get_the_permissions_of_any_new_file(tmp_path, umask):
    """Written through a temporary file, they kept mkstemp's owner-only 0o600: a bundle or a video on a
    shared disk that another user (Serve's replicas, a colleague) could not read."""
    old = os.umask(umask)
    try:
        storage.write_bytes(tmp_path / "bundle" / "denoiser.safetensors", b"weights")
        storage.create_new(tmp_path / "claim", b"")
        with Mp4Writer(tmp_path / "talking.mp4", 16, 16, fps=25) as w:
            w.write(np.zeros((2, 16, 16, 3), np.uint8))
        (tmp_path / "by_open").write_bytes(b"")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert storage.new_file_mode() == 0o666 & ~old
    assert stat.S_IMODE((tmp_path / "by_open").stat().st_mode) == expected
    for name in ("bundle/denoiser.safetensors", "claim", "talking.mp4"):
        assert oct(stat.S_IMODE((tmp_path / name).stat().st_mode)) == oct(expected), name


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_columns_read_of_a_shard_are_the_only_parts_of_it_fetched(where, synthtalk_shards, request, monkeypatch):
    """Reading a few columns of the clip shards (the training driver reads num_frames, audio_encoder) fetched
    every whole file, frames and all: at HDTF scale, the whole data set through the driver."""
    from fet.data.shards import read_rows, shard_files

    shards = synthtalk_shards
    if where == "s3":
        shards = f"{request.getfixturevalue('s3_bucket')}/shards"
        storage.upload_dir(synthtalk_shards, shards)
    fetched = []

    def counting(read):  # the real read, its bytes counted
        def counted(*args):
            data = read(*args)
            fetched.append(len(data))
            return data

        return counted

    monkeypatch.setattr(storage, "read_range", counting(storage.read_range))
    monkeypatch.setattr(storage, "read_bytes", counting(storage.read_bytes))
    whole = list(read_rows(synthtalk_shards, "clips", "train"))
    fetched.clear()
    rows = list(read_rows(shards, "clips", "train", ["split", "num_frames", "audio_encoder"]))
    assert rows == [{k: r[k] for k in ("split", "num_frames", "audio_encoder")} for r in whole]
    total = sum(storage.size(f) for f in shard_files(shards, "clips"))
    assert 0 < sum(fetched) < total / 10, (sum(fetched), total)
    frames = list(read_rows(shards, "clips", "train", ["split", "frames"]))  # the big column, whole
    assert [r["frames"] for r in frames] == [r["frames"] for r in whole]


class AtOnce:
    """A real storage call, with how many of it ran at once counted (each is held 20 ms first)."""

    def __init__(self, call):
        self.call, self.busy, self.most, self.lock = call, 0, 0, threading.Lock()

    def __call__(self, *args):
        with self.lock:
            self.busy += 1
            self.most = max(self.most, self.busy)
        time.sleep(0.02)
        try:
            return self.call(*args)
        finally:
            with self.lock:
                self.busy -= 1


@pytest.mark.parametrize("where", ["local", "s3"])
def test_many_small_files_are_read_several_at_a_time_in_the_order_given(where, tmp_path, request):
    """A shard listing reads every sidecar: one request at a time, thousands of shards on S3 kept a driver
    waiting minutes on round trips."""
    root = str(tmp_path) if where == "local" else request.getfixturevalue("s3_bucket")
    uris = [storage.join(root, "sides", f"part-{i:03d}.json") for i in range(40)]
    for i, u in enumerate(uris):
        storage.write_text(u, f'{{"i": {i}}}')
    storage._client.cache_clear()  # the threads' first requests build the client together
    assert storage.read_texts(uris) == [f'{{"i": {i}}}' for i in range(40)]
    read = AtOnce(storage.read_text)
    assert storage.each(read, uris) == storage.read_texts(uris)
    assert read.most == storage.READ_THREADS
    with pytest.raises(storage.NotFoundError, match="part-999"):
        storage.read_texts([*uris, storage.join(root, "sides", "part-999.json")])


def test_a_whole_pass_over_small_columns_reads_the_shard_files_several_at_a_time(synthtalk_shards, monkeypatch):
    """The training driver reads a column or two of every training row (stage A's audio encoders, the rows a
    cached run keeps) before it starts: one file at a time, three round trips each. (Faces: the SynthTalk
    shards hold one clip file and three image files.)"""
    from fet.data.shards import read_rows, shard_files

    columns = ["split", "attributes"]
    one_at_a_time = list(read_rows(synthtalk_shards, "images", "train", columns))
    read_range = AtOnce(storage.read_range)
    monkeypatch.setattr(storage, "read_range", read_range)
    assert list(read_rows(synthtalk_shards, "images", "train", columns, concurrent=True)) == one_at_a_time
    files = len(shard_files(synthtalk_shards, "images"))
    assert files > 1 and read_range.most == min(files, storage.READ_THREADS), (files, read_range.most)


def test_local_ages_are_read_by_the_file_systems_clock_and_its_probes_are_never_listed(tmp_path, monkeypatch):
    """On a shared file system (NFS) a file's time is the server's: a driver or replica whose own clock runs
    two hours ahead (here: this process's ``time.time``) took every file for two hours old."""
    path = tmp_path / "d" / "lease.json"
    storage.write_text(path, "{}")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 7200)
    assert storage.age(path) < 60 and storage.ages(tmp_path) == {str(path): pytest.approx(0, abs=60)}
    (tmp_path / "d" / f"{storage.CLOCK_PROBE}left-by-a-killed-process").write_text("")
    assert storage.list_files(tmp_path) == [str(path)] and list(storage.ages(tmp_path)) == [str(path)]
    os.utime(path, (real() - 600, real() - 600))
    assert 540 < storage.age(path) < 660
