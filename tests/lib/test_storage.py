"""The backup store, for real: a local folder (and a full tmpfs), and S3 on moto's server."""

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import S3_ACCESS_KEY, S3_SECRET_KEY, nearly_full_disk, s3_client

from dashboard.lib import s3, storage

DATA = os.urandom(300_000) * 4  # 1.2 MB, not compressible further


class Pipe:
    """A non-seekable stream: what ``put`` gets from gpg in the pipeline."""

    def __init__(self, data: bytes) -> None:
        read_fd, write_fd = os.pipe()
        self.reader = os.fdopen(read_fd, "rb", buffering=0)
        writer = os.fdopen(write_fd, "wb")
        self.writer = threading.Thread(target=lambda: (writer.write(data), writer.close()))
        self.writer.start()

    def read(self, size: int = -1) -> bytes:
        return self.reader.read(size)

    def close(self) -> None:
        self.writer.join()
        self.reader.close()


@pytest.fixture
def s3_settings(settings: Any, s3_endpoint: str) -> str:
    settings.RUNWAY_S3_ENDPOINT_URL = s3_endpoint
    settings.RUNWAY_S3_ACCESS_KEY_ID = S3_ACCESS_KEY
    settings.RUNWAY_S3_SECRET_ACCESS_KEY = S3_SECRET_KEY
    return s3_endpoint


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    with nearly_full_disk(tmp_path / "small") as folder:
        yield folder


def test_a_local_put_is_renamed_into_place_with_its_size_and_sha256(tmp_path: Path) -> None:
    base = f"file://{tmp_path}/store"
    seen: list[str] = []
    stored = storage.put(base, "db/one.dump.zst.gpg", io.BytesIO(DATA), on_upload_id=seen.append)
    assert stored.url == f"file://{tmp_path}/store/db/one.dump.zst.gpg"
    assert (stored.size, stored.sha256) == (len(DATA), hashlib.sha256(DATA).hexdigest())
    assert (tmp_path / "store/db/one.dump.zst.gpg").read_bytes() == DATA
    assert ".partial-" in seen[0] and not Path(seen[0]).exists()
    assert storage.exists(stored.url)
    with storage.open_read(stored.url) as body:
        assert body.read() == DATA
    storage.delete(stored.url)
    assert not storage.exists(stored.url)
    storage.delete(stored.url)  # already gone is fine


def test_a_local_put_that_is_abandoned_leaves_nothing(tmp_path: Path) -> None:
    def refuse() -> None:
        raise RuntimeError("pg_dump failed")

    with pytest.raises(RuntimeError, match="pg_dump failed"):
        storage.put(f"file://{tmp_path}", "db/x.gpg", io.BytesIO(DATA), before_commit=refuse)
    assert list((tmp_path / "db").iterdir()) == []


def test_a_full_disk_is_named_and_the_partial_file_removed(full_disk: Path) -> None:
    with pytest.raises(storage.StorageFull, match="is full"):
        storage.put(f"file://{full_disk}", "db/x.gpg", io.BytesIO(DATA))
    assert sorted(p.name for p in full_disk.rglob("*")) == ["db", "filler"]


def test_a_local_leftover_is_found_and_aborted(tmp_path: Path) -> None:
    base = f"file://{tmp_path}"
    partial = tmp_path / "db" / ".x.gpg.partial-1234"
    partial.parent.mkdir()
    partial.write_bytes(b"half")
    [leftover] = storage.leftovers(base)
    assert (leftover.url, leftover.upload_id) == (f"file://{tmp_path}/db/x.gpg", str(partial))
    assert leftover.started is not None
    storage.abort(leftover.url, leftover.upload_id)
    assert not partial.exists()
    assert storage.leftovers(base) == []


def test_abort_never_removes_anything_but_a_partial_file(tmp_path: Path) -> None:
    other = tmp_path / "precious"
    other.write_text("keep")
    with pytest.raises(storage.StorageError):
        storage.abort(f"file://{tmp_path}/x.gpg", str(other))
    assert other.exists()


@pytest.mark.parametrize(
    "url", ["/no/scheme", "file://relative/path", "s3://", "ftp://host/x", "file:"]
)
def test_a_bad_storage_url_is_named(url: str) -> None:
    with pytest.raises(storage.BadStorageUrl):
        storage.check_url(url)


def test_an_s3_put_streams_a_pipe_in_parts(s3_settings: str, s3_bucket: str) -> None:
    pipe = Pipe(DATA * 5)  # 6 MB: two parts of 5 MiB (S3's minimum) and a short last one
    seen: list[str] = []
    stored = storage.put(f"s3://{s3_bucket}/prefix", "db/one.gpg", pipe, on_upload_id=seen.append)
    pipe.close()
    assert stored.url == f"s3://{s3_bucket}/prefix/db/one.gpg"
    assert stored.sha256 == hashlib.sha256(DATA * 5).hexdigest()
    client = s3_client(s3_settings)
    body = client.get_object(Bucket=s3_bucket, Key="prefix/db/one.gpg")["Body"].read()
    assert body == DATA * 5
    assert seen and client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    with storage.open_read(stored.url) as fetched:
        assert fetched.read() == DATA * 5
    storage.delete(stored.url)
    assert not storage.exists(stored.url)


def test_s3_parts_are_the_given_size(s3_settings: str, s3_bucket: str) -> None:
    client = s3.client()
    size = s3.upload(client, s3_bucket, "k", io.BytesIO(DATA * 9), part_size=5 * 1024 * 1024)
    assert size == len(DATA) * 9
    head = client.head_object(Bucket=s3_bucket, Key="k")
    assert head["ETag"].endswith('-3"')  # 10.8 MB in 5 MiB parts: 3 parts


def test_an_abandoned_s3_put_leaves_no_object_and_no_open_upload(
    s3_settings: str, s3_bucket: str
) -> None:
    def refuse() -> None:
        raise RuntimeError("gpg failed")

    with pytest.raises(RuntimeError, match="gpg failed"):
        storage.put(f"s3://{s3_bucket}", "x.gpg", io.BytesIO(DATA), before_commit=refuse)
    client = s3_client(s3_settings)
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_an_open_s3_upload_is_listed_and_aborted(s3_settings: str, s3_bucket: str) -> None:
    client = s3_client(s3_settings)
    upload = client.create_multipart_upload(Bucket=s3_bucket, Key="runway/db/x.gpg")
    [leftover] = storage.leftovers(f"s3://{s3_bucket}/runway")
    assert leftover.url == f"s3://{s3_bucket}/runway/db/x.gpg"
    assert leftover.upload_id == upload["UploadId"] and leftover.started is not None
    storage.abort(leftover.url, leftover.upload_id)
    storage.abort(leftover.url, leftover.upload_id)  # twice is fine
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_a_missing_bucket_is_named_and_not_transient(s3_settings: str) -> None:
    with pytest.raises(s3.BucketMissing, match="'no-such-bucket' does not exist") as caught:
        storage.put("s3://no-such-bucket/x", "k", io.BytesIO(b"x"))
    assert caught.value.transient is False


def test_an_unreachable_endpoint_is_named_and_transient(settings: Any) -> None:
    from devstack.cluster import free_port

    settings.RUNWAY_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    settings.RUNWAY_S3_ACCESS_KEY_ID, settings.RUNWAY_S3_SECRET_ACCESS_KEY = "k", "s"
    with pytest.raises(s3.S3Unreachable, match="cannot be reached") as caught:
        storage.put("s3://bucket/x", "k", io.BytesIO(b"x"))
    assert caught.value.transient is True
