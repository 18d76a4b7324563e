"""Read and write local paths and ``s3://`` URIs through one small API.

S3 credentials and the endpoint come from the standard AWS sources (environment variables such as
``AWS_ACCESS_KEY_ID`` / ``AWS_ENDPOINT_URL``, a profile, or an instance role), never from our configs,
so no secret ends up in a logged config or a bundle.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import io
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar


class StorageError(OSError):
    """A path or URI that cannot be read or written."""


class NotFoundError(StorageError):
    """A file or object that is not there (as opposed to storage that cannot be reached or refuses)."""


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ("bucket", "a/b")."""
    if not is_s3(uri):
        raise StorageError(f"{uri!r}: expected an s3://bucket/key URI")
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri!r}: no bucket name")
    return bucket, key


def join(base: str | os.PathLike, *parts: str) -> str:
    """Join path parts for local paths and URIs alike."""
    base = str(base)
    if is_s3(base):
        out = base.rstrip("/")
        for p in parts:
            out = f"{out}/{p.strip('/')}"
        return out
    return str(Path(base, *parts))


def absolute(path: str | None) -> str | None:
    """A relative local path made absolute against the current directory; URIs (``s3://``, ...) and empty
    values as they are."""
    if not path or "://" in path or Path(path).is_absolute():
        return path
    return str(Path(path).resolve())


@functools.lru_cache(maxsize=4)
def _client(endpoint: str | None):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


_CLIENT_LOCK = threading.Lock()  # boto3 builds clients from one shared session, not to be entered twice at once


def s3_client():
    """A boto3 S3 client (safe to share between threads); ``AWS_ENDPOINT_URL`` (or ``_S3``) points it at a
    non-AWS server."""
    with _CLIENT_LOCK:
        return _client(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))


def _s3_error(uri: str, e: Exception) -> StorageError:
    code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
    if code in _MISSING:
        return NotFoundError(f"{uri}: no such object")
    return StorageError(f"{uri}: {e}")


_MISSING = ("404", "NoSuchKey", "NotFound")


def read_bytes(uri: str | os.PathLike) -> bytes:
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as e:
            raise _s3_error(uri, e) from e
    try:
        return Path(uri).read_bytes()
    except FileNotFoundError as e:
        raise NotFoundError(f"{uri}: no such file") from e
    except OSError as e:
        raise StorageError(f"{uri}: cannot read it ({e.strerror or e})") from e


def read_range(uri: str | os.PathLike, start: int, length: int) -> bytes:
    """``length`` bytes from ``start`` (fewer where the file ends first): a file's header without reading
    its body, which for model weights on S3 can be gigabytes."""
    uri = str(uri)
    if length <= 0:
        return b""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            body = s3_client().get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{start + length - 1}")
            return body["Body"].read()
        except Exception as e:
            if getattr(e, "response", {}).get("Error", {}).get("Code") == "InvalidRange":
                return b""  # starts at or after its end
            raise _s3_error(uri, e) from e
    try:
        with open(uri, "rb") as f:
            f.seek(start)
            return f.read(length)
    except FileNotFoundError as e:
        raise NotFoundError(f"{uri}: no such file") from e
    except OSError as e:
        raise StorageError(f"{uri}: cannot read it ({e.strerror or e})") from e


def size(uri: str | os.PathLike) -> int:
    """The file's or object's size in bytes; a missing one is a ``NotFoundError``."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            return int(s3_client().head_object(Bucket=bucket, Key=key)["ContentLength"])
        except Exception as e:
            raise _s3_error(uri, e) from e
    try:
        return Path(uri).stat().st_size
    except FileNotFoundError as e:
        raise NotFoundError(f"{uri}: no such file") from e


class RangeReader(io.RawIOBase):
    """A read-only, seekable file over ``read_range``: a reader that needs a few parts of a large file or
    object (a Parquet footer and the chunks of the columns it reads) fetches only those parts."""

    def __init__(self, uri: str | os.PathLike) -> None:
        super().__init__()
        self.uri, self._size, self._pos = str(uri), size(uri), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        data = read_range(self.uri, self._pos, min(len(buffer), max(0, self._size - self._pos)))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def read_text(uri: str | os.PathLike) -> str:
    return read_bytes(uri).decode("utf-8")


READ_THREADS = 10  # a boto3 client keeps 10 connections to a server
T = TypeVar("T")


def each(fn: Callable[[str], T], uris: list[str]) -> list[T]:
    """``fn`` (a read, a write) of each of many files or objects, in the order given, ``READ_THREADS`` at a
    time: one at a time, small requests to S3 are mostly waiting on each one's round trip. The first error
    is raised."""
    if len(uris) <= 1:
        return [fn(u) for u in uris]
    with ThreadPoolExecutor(min(READ_THREADS, len(uris))) as pool:
        return list(pool.map(fn, uris))


def read_texts(uris: list[str]) -> list[str]:
    """The texts of many small files or objects, in the order given (read as ``each`` reads)."""
    return each(read_text, uris)


def new_file_mode() -> int:
    """The permissions ``open`` gives a new file under this process's umask (0o644 under the usual 022).
    A file written through a temporary one would otherwise keep ``mkstemp``'s 0o600, readable by its owner
    alone: a bundle or a video on a shared disk that Serve's replicas or a colleague, as another user,
    could not read. Read from /proc where it is (setting the umask to learn it is not thread-safe)."""
    with contextlib.suppress(OSError, StopIteration, ValueError):
        status = Path("/proc/self/status").read_text().splitlines()
        return 0o666 & ~int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    """Write a whole file; local writes are atomic (temp file + rename) and get the permissions of any new
    file (``new_file_mode``); S3 puts are atomic by nature."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        except Exception as e:
            raise _s3_error(uri, e) from e
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(uri: str | os.PathLike) -> None:
    """Refuse, before the work that makes a file, a destination it could not be written to: a local path that is
    a folder or whose folder cannot be made or written to, an S3 URI without bucket or key. (Whether S3 takes
    the object is known only when it is put.)"""
    uri = str(uri)
    if is_s3(uri):
        if not split_s3(uri)[1] or uri.endswith("/"):
            raise StorageError(f"{uri!r}: expected s3://bucket/key, a file's URI")
        return
    path = Path(uri)
    if path.is_dir() or uri.endswith(os.sep):
        raise StorageError(f"{uri}: is a folder; expected a file's path")
    blocking = next((p for p in (path.parent, *path.parent.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise StorageError(f"{uri}: cannot write there ({blocking} is a file, not a folder)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise StorageError(f"{uri}: cannot write there ({e.strerror or e})") from e


def write_text(uri: str | os.PathLike, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def create_new(uri: str | os.PathLike, data: bytes = b"") -> bool:
    """Write a file only where none is: whether this call wrote it. Of processes racing on one path, on
    one machine or many, exactly one wins (``O_EXCL`` on disk, ``If-None-Match: *`` on S3), which makes
    it a claim: of a job to run again, say."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except Exception as e:
            if getattr(e, "response", {}).get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                return False
            raise _s3_error(uri, e) from e
        return True
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # less the umask, as open() does
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def exists(uri: str | os.PathLike) -> bool:
    """Whether the file or object is there. Storage that cannot say (S3 unreachable, credentials refused)
    is a ``StorageError``, never taken for "not there"."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            s3_client().head_object(Bucket=bucket, Key=key)
            return True
        except Exception as e:
            if isinstance(error := _s3_error(uri, e), NotFoundError):
                return False
            raise error from e
    return Path(uri).exists()


def delete(uri: str | os.PathLike) -> None:
    """Remove one file or object; one that is already gone is no error."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            s3_client().delete_object(Bucket=bucket, Key=key)
        except Exception as e:
            raise _s3_error(uri, e) from e
        return
    Path(uri).unlink(missing_ok=True)


def list_files(uri: str | os.PathLike) -> list[str]:
    """Every file under a directory or prefix, as full paths/URIs, sorted."""
    return sorted(ages(uri) if is_s3(str(uri)) else _local_mtimes(Path(uri)))


CLOCK_PROBE = ".fet-clock-"  # the files ``_local_now`` makes for an instant; no listing shows them


def _local_now(directory: Path) -> float:
    """The time by the clock of the file system that holds ``directory``, which on NFS is the server's and not
    this machine's: the modification time of a file made there and removed at once. This machine's clock
    where no file can be made."""
    try:
        fd, name = tempfile.mkstemp(prefix=CLOCK_PROBE, dir=directory)
    except OSError:
        return time.time()
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)


def _local_mtimes(root: Path) -> dict[str, float]:
    """Every file under a local directory → its modification time (clock probes left out)."""
    if not root.is_dir():
        raise (StorageError if root.exists() else NotFoundError)(f"{root}: not a directory")
    out = {}
    for p in root.rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # deleted while listed
            if p.is_file() and not p.name.startswith(CLOCK_PROBE):
                out[str(p)] = p.stat().st_mtime
    return out


def _server_time(response: dict) -> float:
    """The time an S3 server answered at (its ``Date`` header), or this machine's when it sent none."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    return email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()


def ages(uri: str | os.PathLike) -> dict[str, float]:
    """Every file under a directory or prefix → seconds since it was last written or ``touch``-ed, by the
    storage's own clock (an S3 listing's ``Date`` against each object's ``LastModified``; a local or NFS
    directory's clock probe against each file's time), as ``age``."""
    uri = str(uri)
    if is_s3(uri):
        bucket, prefix = split_s3(uri)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        out = {}
        paginator = s3_client().get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                now = _server_time(page)
                out |= {f"s3://{bucket}/{o['Key']}": max(0.0, now - o["LastModified"].timestamp())
                        for o in page.get("Contents", [])}  # fmt: skip
        except Exception as e:
            raise _s3_error(uri, e) from e
        return out
    mtimes = _local_mtimes(Path(uri))
    now = _local_now(Path(uri))
    return {p: max(0.0, now - t) for p, t in mtimes.items()}


def age(uri: str | os.PathLike) -> float:
    """Seconds since the file or object was last written or ``touch``-ed, by the storage's own clock, so a
    caller whose clock is off does not misjudge it: an S3 server's answer carries its time (``Date``, to one
    second) beside the object's ``LastModified``; a local file's time is read against a clock probe made
    beside it (on NFS both are the server's times). A missing one is a ``NotFoundError``."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            head = s3_client().head_object(Bucket=bucket, Key=key)
        except Exception as e:
            raise _s3_error(uri, e) from e
        return max(0.0, _server_time(head) - head["LastModified"].timestamp())
    try:
        mtime = Path(uri).stat().st_mtime
    except FileNotFoundError as e:
        raise NotFoundError(f"{uri}: no such file") from e
    return max(0.0, _local_now(Path(uri).parent) - mtime)


def touch(uri: str | os.PathLike) -> None:
    """Mark a file or object modified now, its content unchanged (an object is copied onto itself, on the
    server). A missing one is a ``StorageError``."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            s3_client().copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key},
                                    MetadataDirective="REPLACE")  # fmt: skip
        except Exception as e:
            raise _s3_error(uri, e) from e
        return
    try:
        os.utime(uri)
    except FileNotFoundError as e:
        raise NotFoundError(f"{uri}: no such file") from e


def upload_dir(local_dir: str | os.PathLike, uri: str) -> None:
    """Copy a local directory tree to a path or URI (files only, relative layout kept)."""
    local_dir = Path(local_dir)
    for path in sorted(local_dir.rglob("*")):
        if path.is_file():
            rel = path.relative_to(local_dir).as_posix()
            if is_s3(uri):
                write_bytes(join(uri, rel), path.read_bytes())
            else:
                dest = Path(uri, rel)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)


@contextlib.contextmanager
def local_copy(uri: str | os.PathLike, tree: bool = False) -> Iterator[Path]:
    """The file at ``uri`` (with ``tree``: the directory) as a local path for the length of a ``with``
    block, for a library that loads from a path and keeps nothing open after: the path itself (unchecked;
    the library says what it misses), or a copy of the S3 object(s) that is removed when the block ends, so
    nothing is left behind however the process ends later (Ray kills its workers and Serve replicas)."""
    uri = str(uri)
    if not is_s3(uri):
        yield Path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="fet-s3-") as folder:
        if tree:
            yield local_dir(uri, folder)
            return
        file = Path(folder) / uri.rsplit("/", 1)[-1]  # its own name, for readers that look at the suffix
        file.write_bytes(read_bytes(uri))
        yield file


def local_dir(uri: str | os.PathLike, cache_root: str | os.PathLike) -> Path:
    """A local directory holding the tree at ``uri``: the path itself, or a download of an S3 prefix into
    ``cache_root``, which the caller removes (``local_copy`` does)."""
    uri = str(uri)
    if not is_s3(uri):
        path = Path(uri)
        if not path.is_dir():
            raise StorageError(f"{uri}: not a directory")
        return path
    bucket, prefix = split_s3(uri)
    root = Path(cache_root)
    files = list_files(uri)
    if not files:
        raise StorageError(f"{uri}: no objects under this prefix")
    base = f"s3://{bucket}/{prefix.rstrip('/')}/" if prefix else f"s3://{bucket}/"
    for f in files:
        dest = root / f[len(base) :]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(read_bytes(f))
    return root
