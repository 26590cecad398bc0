"""S3 through boto3, against any S3-compatible endpoint. The only module that talks to S3.

Uploads are multipart and read a non-seekable stream part by part, so memory stays at a few parts
whatever the object's size. The multipart upload's id is handed to the caller as soon as it exists,
so that the upload of a worker killed mid-way can be aborted later (an open multipart upload is
invisible in a bucket listing but still costs storage). Errors come out as :class:`S3Error`
subclasses with a clear message and a ``transient`` flag (worth retrying or not).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

MiB = 1024 * 1024
# S3's minimum part is 5 MiB (except the last). Small parts keep memory low and the tail short
# (the last part goes after the stream ends); the size doubles every PARTS_PER_SIZE parts, up to
# 512 MiB, so S3's 10,000 parts still hold about 2.5 TiB.
PART_SIZE = 8 * MiB
MAX_PARTS = 10_000
PARTS_PER_SIZE = 1_000
UPLOAD_THREADS = 2


class S3Error(RuntimeError):
    transient = False


class S3Unreachable(S3Error):
    transient = True


class BucketMissing(S3Error):
    pass


class BadCredentials(S3Error):
    pass


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class OpenUpload:
    key: str
    upload_id: str
    initiated: datetime | None


def client(
    endpoint_url: str | None = None,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    region: str | None = None,
) -> Any:
    """A boto3 S3 client configured from settings (arguments override them)."""
    from django.conf import settings

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or settings.RUNWAY_S3_ENDPOINT_URL,
        aws_access_key_id=access_key or settings.RUNWAY_S3_ACCESS_KEY_ID,
        aws_secret_access_key=secret_key or settings.RUNWAY_S3_SECRET_ACCESS_KEY,
        region_name=region or settings.RUNWAY_S3_REGION,
        config=Config(
            connect_timeout=5,
            read_timeout=120,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=UPLOAD_THREADS + 2,
            # Only checksum when S3 asks: S3-compatible stores often reject the new defaults.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def explain(exc: Exception, bucket: str = "", *, endpoint: str | None = None) -> S3Error:
    """Turn a boto3/botocore exception into an S3Error saying what went wrong."""
    if isinstance(exc, S3Error):
        return exc
    where = endpoint or _endpoint_name()
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ConnectionClosedError) or (
        isinstance(exc, BotoCoreError) and "connect" in str(exc).lower()
    ):
        return S3Unreachable(f"The S3 endpoint {where} cannot be reached: {exc}")
    if isinstance(exc, ReadTimeoutError):
        return S3Unreachable(f"The S3 endpoint {where} stopped answering: {exc}")
    if isinstance(exc, NoCredentialsError):
        return BadCredentials(
            "No S3 credentials: set RUNWAY_S3_ACCESS_KEY_ID and RUNWAY_S3_SECRET_ACCESS_KEY."
        )
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = error.get("Message") or code
        if code in ("NoSuchBucket",):
            return BucketMissing(f"The bucket {bucket!r} does not exist on {where}.")
        if code in (
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "InvalidToken",
            "ExpiredToken",
            "InvalidClientTokenId",
        ):
            return BadCredentials(
                f"The S3 endpoint {where} refused the credentials ({code}): check "
                "RUNWAY_S3_ACCESS_KEY_ID and RUNWAY_S3_SECRET_ACCESS_KEY."
            )
        if code in ("AccessDenied", "AllAccessDisabled") or status == 403:
            return BadCredentials(
                f"The S3 credentials may not write to bucket {bucket!r} ({code}: {message})."
            )
        error_class = S3Unreachable if status >= 500 or code in _THROTTLED else S3Error
        return error_class(f"S3 said {code or status}: {message}")
    if isinstance(exc, BotoCoreError):
        return S3Error(f"S3 client error: {exc}")
    return S3Error(f"S3 error: {exc.__class__.__name__}: {exc}")


_THROTTLED = {"SlowDown", "Throttling", "RequestTimeout", "ServiceUnavailable", "InternalError"}


def _endpoint_name() -> str:
    try:
        from django.conf import settings

        return settings.RUNWAY_S3_ENDPOINT_URL or "AWS S3"
    except Exception:  # pragma: no cover - settings not configured (bench without Django)
        return "the S3 endpoint"


def _call(bucket: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except (BotoCoreError, ClientError) as exc:
        client = getattr(fn, "__self__", None)
        endpoint = client.meta.endpoint_url if client is not None else None
        raise explain(exc, bucket, endpoint=endpoint) from exc


def upload(
    s3: Any,
    bucket: str,
    key: str,
    stream: Readable,
    *,
    on_upload_id: Callable[[str], None] | None = None,
    before_complete: Callable[[], None] | None = None,
    tick: Callable[[], None] | None = None,
    part_size: int = PART_SIZE,
    threads: int = UPLOAD_THREADS,
) -> int:
    """Upload everything ``stream`` yields as one object; return its size in bytes.

    ``on_upload_id(upload_id)`` is called once the multipart upload exists, before any data goes;
    ``before_complete()`` after the last part, before the object becomes visible: it may raise
    to abandon the upload (say, because the program writing the stream failed); ``tick()`` about
    every second while waiting for parts to go (a heartbeat that does not stop on a slow network).
    On any failure the multipart upload is aborted (best effort: when even that fails, the id
    given to ``on_upload_id`` is how to abort it later) and an S3Error is raised.
    """
    created = _call(bucket, s3.create_multipart_upload, Bucket=bucket, Key=key)
    upload_id = created["UploadId"]
    try:
        if on_upload_id is not None:
            on_upload_id(upload_id)
        size = 0
        parts: list[dict[str, Any]] = []
        pending: deque[Future[dict[str, Any]]] = deque()
        # Not a ``with`` block: leaving one waits for the parts still on the wire, which on a
        # slow link is many seconds after a tick said stop (the reaper took the job, or it was
        # cancelled). Those requests end on their own once the upload is aborted below (S3
        # refuses a part of an aborted upload; one that was already arriving may still be kept,
        # which the reaper's abort of the recorded upload id, or a bucket's lifecycle rule for
        # incomplete uploads, removes).
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="s3-part")
        try:
            number = 0
            while True:
                size_now = part_size << min(number // PARTS_PER_SIZE, 6)
                data = _read_exactly(stream, size_now)
                if not data and number > 0:
                    break
                number += 1
                if number > MAX_PARTS:
                    raise S3Error(f"The object would need more than {MAX_PARTS} parts.")
                size += len(data)
                short = len(data) < size_now
                pending.append(pool.submit(_upload_part, s3, bucket, key, upload_id, number, data))
                del data
                while len(pending) >= threads:
                    parts.append(_result(pending.popleft(), tick))
                if short:
                    break  # the stream has ended
            while pending:
                parts.append(_result(pending.popleft(), tick))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        if before_complete is not None:
            before_complete()
        _call(
            bucket,
            s3.complete_multipart_upload,
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )
        return size
    except BaseException as exc:
        with contextlib.suppress(S3Error):
            abort(s3, bucket, key, upload_id)
        if isinstance(exc, BotoCoreError | ClientError):
            raise explain(exc, bucket) from exc
        raise


def _result(future: Future[dict[str, Any]], tick: Callable[[], None] | None) -> dict[str, Any]:
    while tick is not None and not future.done():
        wait([future], timeout=1.0)
        tick()
    return future.result()


def _read_exactly(stream: Readable, size: int) -> bytes:
    """Up to ``size`` bytes: fewer only at the end of the stream (pipes return short reads)."""
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _upload_part(
    s3: Any, bucket: str, key: str, upload_id: str, number: int, data: bytes
) -> dict[str, Any]:
    answer = _call(
        bucket,
        s3.upload_part,
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        PartNumber=number,
        Body=data,
    )
    return {"PartNumber": number, "ETag": answer["ETag"]}


def abort(s3: Any, bucket: str, key: str, upload_id: str) -> None:
    """Abort a multipart upload; one that is already gone (aborted, completed) is fine."""
    try:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchUpload", "404"):
            return
        raise explain(exc, bucket) from exc
    except BotoCoreError as exc:
        raise explain(exc, bucket) from exc


def download(s3: Any, bucket: str, key: str) -> Any:
    """A streaming body for the object (``.read(n)``, ``.close()``)."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise S3Error(f"s3://{bucket}/{key} does not exist.") from exc
        raise explain(exc, bucket) from exc
    except BotoCoreError as exc:
        raise explain(exc, bucket) from exc


def delete(s3: Any, bucket: str, key: str) -> None:
    _call(bucket, s3.delete_object, Bucket=bucket, Key=key)


def exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise explain(exc, bucket) from exc
    except BotoCoreError as exc:
        raise explain(exc, bucket) from exc


def open_uploads(s3: Any, bucket: str, prefix: str = "") -> list[OpenUpload]:
    """Multipart uploads started and neither completed nor aborted."""
    found: list[OpenUpload] = []
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = _call(bucket, s3.list_multipart_uploads, **kwargs)
        for item in page.get("Uploads", []):
            found.append(OpenUpload(item["Key"], item["UploadId"], item.get("Initiated")))
        if not page.get("IsTruncated"):
            return found
        kwargs["KeyMarker"] = page.get("NextKeyMarker", "")
        kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker", "")
