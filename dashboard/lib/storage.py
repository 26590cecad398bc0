"""Where backups live: a local folder (``file:///path``) or S3 (``s3://bucket/prefix``).

One interface over both. :func:`put` consumes a stream and returns the stored object's URL,
size and sha256 (of exactly the bytes stored). An object appears complete or not at all: a local
file is written under a temporary name and renamed; an S3 object is a multipart upload completed
only at the end. Either way the caller learns an "upload id" (the temporary file, or the S3
multipart upload id) before any data is written, so a leftover of a killed writer can be
removed later with :func:`abort`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit

from dashboard.lib import s3

CHUNK = 1024 * 1024
PARTIAL = ".partial-"


class StorageError(RuntimeError):
    transient = False


class BadStorageUrl(StorageError):
    pass


class StorageFull(StorageError):
    pass


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Stored:
    url: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Leftover:
    url: str
    upload_id: str
    started: datetime | None = None


def check_url(url: str) -> str:
    """``url`` if it is a usable storage location, else BadStorageUrl saying why."""
    parts = urlsplit(url.strip())
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise BadStorageUrl(f"{url!r}: a local store is file:///absolute/path.")
        return url.strip().rstrip("/") or "file:///"
    if parts.scheme == "s3":
        if not parts.netloc:
            raise BadStorageUrl(f"{url!r}: an S3 store is s3://bucket or s3://bucket/prefix.")
        return url.strip().rstrip("/")
    raise BadStorageUrl(f"{url!r}: storage is file:///path or s3://bucket/prefix.")


def join(base: str, key: str) -> str:
    return f"{check_url(base)}/{quote(key.lstrip('/'))}"


def _local(url: str) -> Path:
    return Path(unquote(urlsplit(url).path))


def _bucket_key(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.netloc, unquote(parts.path.lstrip("/"))


def _is_s3(url: str) -> bool:
    return check_url(url).startswith("s3://")


class _Hashing:
    def __init__(self, stream: Readable) -> None:
        self.stream = stream
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self.stream.read(size)
        self.sha.update(data)
        self.size += len(data)
        return data


def put(
    base: str,
    key: str,
    stream: Readable,
    *,
    on_upload_id: Callable[[str], None] | None = None,
    before_commit: Callable[[], None] | None = None,
    tick: Callable[[], None] | None = None,
) -> Stored:
    """Store everything ``stream`` yields under ``key`` below ``base``.

    ``on_upload_id`` learns how to find a leftover before any data is written;
    ``before_commit`` runs after the stream ends and before the object appears, and may raise to
    abandon it; ``tick`` is called while waiting on the network. Raises StorageError (or an
    s3.S3Error); nothing partial is left behind.
    """
    url = join(base, key)
    hashing = _Hashing(stream)
    if _is_s3(url):
        bucket, object_key = _bucket_key(url)
        s3.upload(
            s3.client(),
            bucket,
            object_key,
            hashing,
            on_upload_id=on_upload_id,
            before_complete=before_commit,
            tick=tick,
        )
    else:
        _put_local(_local(url), hashing, on_upload_id, before_commit)
    return Stored(url, hashing.size, hashing.sha.hexdigest())


def _put_local(
    final: Path,
    stream: _Hashing,
    on_upload_id: Callable[[str], None] | None,
    before_commit: Callable[[], None] | None,
) -> None:
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _local_error(exc, final) from exc
    if final.exists():
        raise StorageError(f"{final} already exists; Runway never overwrites a backup.")
    partial = final.with_name(f".{final.name}{PARTIAL}{secrets.token_hex(4)}")
    if on_upload_id is not None:
        on_upload_id(str(partial))
    try:
        with partial.open("xb") as out:
            while chunk := stream.read(CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if before_commit is not None:
            before_commit()
        os.rename(partial, final)
        _fsync_dir(final.parent)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise _local_error(exc, final) from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _local_error(exc: OSError, path: Path) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(
            f"The backup store {path.parent} is full (no space left on device); "
            "the partial file was removed."
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(f"Runway may not write to the backup store {path.parent}: {exc}")
    return StorageError(f"Writing {path} failed: {exc.strerror or exc}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_read(url: str) -> Any:
    """A readable binary stream of the object (``.read(n)``, ``.close()``)."""
    if _is_s3(url):
        bucket, key = _bucket_key(url)
        return s3.download(s3.client(), bucket, key)
    try:
        return _local(url).open("rb")
    except FileNotFoundError:
        raise StorageError(f"{_local(url)} does not exist.") from None
    except OSError as exc:
        raise _local_error(exc, _local(url)) from exc


def exists(url: str) -> bool:
    if _is_s3(url):
        bucket, key = _bucket_key(url)
        return s3.exists(s3.client(), bucket, key)
    return _local(url).is_file()


def delete(url: str) -> None:
    """Remove the object; one that is already gone is fine."""
    if _is_s3(url):
        bucket, key = _bucket_key(url)
        s3.delete(s3.client(), bucket, key)
        return
    try:
        _local(url).unlink(missing_ok=True)
    except OSError as exc:
        raise _local_error(exc, _local(url)) from exc


def abort(url: str, upload_id: str) -> None:
    """Remove what an interrupted :func:`put` of ``url`` left (its upload id): never the object."""
    if not upload_id:
        return
    if _is_s3(url):
        bucket, key = _bucket_key(url)
        s3.abort(s3.client(), bucket, key, upload_id)
        return
    final = _local(url)
    partial = Path(upload_id)
    if partial.parent != final.parent or not partial.name.startswith(f".{final.name}{PARTIAL}"):
        raise StorageError(f"{upload_id} is not a partial file of {final}.")
    partial.unlink(missing_ok=True)


def leftovers(base: str) -> list[Leftover]:
    """Interrupted writes below ``base``: open multipart uploads, or partial files."""
    base = check_url(base)
    if _is_s3(base):
        bucket, prefix = _bucket_key(base)
        uploads = s3.open_uploads(s3.client(), bucket, f"{prefix}/" if prefix else "")
        return [
            Leftover(f"s3://{bucket}/{quote(u.key)}", u.upload_id, u.initiated) for u in uploads
        ]
    root = _local(base)
    found = []
    for partial in sorted(root.rglob(f".*{PARTIAL}*")) if root.is_dir() else []:
        name = partial.name[1:].rsplit(PARTIAL, 1)[0]
        started = datetime.fromtimestamp(partial.stat().st_mtime, UTC)
        url = f"file://{quote(str(partial.parent / name))}"
        found.append(Leftover(url, str(partial), started))
    return found
