"""Taking a backup: dump -> compress -> encrypt -> store, streamed end to end.

:func:`request_backup` records the wish (audited) and queues the task; :func:`perform_backup` (the
task, or ``manage.py backup``) claims the row with a conditional UPDATE and runs::

    pg_dump --snapshot=S -Fc -Z0 | zstd -T0 -1 | gpg --symmetric AES256 | Runway -> store

The programs are joined by OS pipes; Runway reads only gpg's output, hashing it (sha256 of the
stored object), counting it (progress and heartbeat, every two seconds) and handing it to the
store (a local folder, or an S3 multipart upload): no full copy ever lands on disk for the custom
format. The directory format dumps with ``pg_dump -Fd -j 2`` into a temporary folder first, then
streams ``tar`` of it through the same compress and encrypt stages.

The row counts of the critical tables and the Alembic revision come from the very snapshot the
dump uses: Runway opens a REPEATABLE READ transaction, exports its snapshot for pg_dump, and counts
in that transaction while pg_dump runs.

Failures end in a failed backup with the failing tool's reason; only transient ones (the network,
an unreachable server) raise :class:`TransientBackupError` so that the task retries. A worker
that dies mid-backup leaves a running row with a stale heartbeat and the id of its upload:
:func:`reap_stale` (periodic) and a redelivered task abort that upload and fail the row.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import psycopg
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from dashboard.audit.chain import Actor, record
from dashboard.backups.models import (
    Backup,
    BackupPolicy,
    BackupState,
    Compression,
    DumpFormat,
)
from dashboard.databases import credentials
from dashboard.databases.models import ManagedDatabase
from dashboard.lib import gpg, pg, s3, storage
from dashboard.lib.secrets import SecretError

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 2.0
PIPE_SIZE = 1024 * 1024
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
DIRECTORY_JOBS = 2
WORKER_DIED = "The worker died mid-backup (no heartbeat since {since})."


class BackupError(RuntimeError):
    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class Abandoned(BackupError):
    """The row stopped being ours while we ran (a reaper marked it failed)."""


class TransientBackupError(RuntimeError):
    """A transient failure (network, unreachable server): the row is queued again; retry."""


# --- The programs and the pipes between them ---


def widen_pipe(pipe: IO[bytes] | None) -> None:
    """A 1 MiB pipe instead of 64 KiB: fewer context switches between the stages."""
    if pipe is not None:
        with suppress(OSError):
            fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_SIZE)


@dataclass
class _Stage:
    name: str
    proc: subprocess.Popen
    err: IO[bytes]
    explain: Callable[[int, str], Exception]

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read(64 * 1024).decode(errors="replace")

    def broke_pipe(self) -> bool:
        """Did it die only because the stage after it stopped reading?"""
        return self.proc.returncode == -13 or "broken pipe" in self.stderr().lower()


def _generic_explain(name: str) -> Callable[[int, str], Exception]:
    def explain(returncode: int, stderr: str) -> Exception:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        detail = "; ".join(lines[-2:])[:400] or (
            f"killed by signal {-returncode}" if returncode < 0 else f"exit {returncode}"
        )
        return BackupError(f"{name} failed: {detail}")

    return explain


class Chain:
    """Programs joined by OS pipes. A failure is blamed on the stage that caused it: the first
    one (upstream first) that failed for a reason other than a broken pipe downstream."""

    def __init__(self) -> None:
        self.stages: list[_Stage] = []

    def __enter__(self) -> Chain:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for stage in self.stages:
            if stage.proc.poll() is None:
                stage.proc.kill()
        for stage in self.stages:
            stage.proc.wait()
            for pipe in (stage.proc.stdin, stage.proc.stdout):
                if pipe is not None:
                    pipe.close()
            stage.err.close()

    def start(
        self,
        name: str,
        launch: Callable[[IO[bytes]], subprocess.Popen],
        explain: Callable[[int, str], Exception] | None = None,
    ) -> subprocess.Popen:
        err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        try:
            proc = launch(err)
        except BaseException:
            err.close()
            raise
        self.stages.append(_Stage(name, proc, err, explain or _generic_explain(name)))
        widen_pipe(proc.stdout)
        return proc

    def run(self, name: str, argv: list[str], *, stdin: Any, stdout: Any) -> subprocess.Popen:
        """Start a plain tool (zstd, gzip, tar) with a minimal environment."""
        proc = self.start(
            name,
            lambda err: subprocess.Popen(
                argv, stdin=stdin, stdout=stdout, stderr=err, env=pg.tool_env(None)
            ),
        )
        if hasattr(stdin, "close"):
            # The new stage holds its own copy; ours would keep the pipe open if it died.
            stdin.close()
        return proc

    def wait(self, tick: Callable[[], None] | None = None) -> None:
        """Wait for every stage; raise the root cause's error if any failed."""
        for stage in self.stages:
            while True:
                try:
                    stage.proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    if tick is not None:
                        tick()
        failed = [stage for stage in self.stages if stage.proc.returncode != 0]
        if not failed:
            return
        for stage in failed:
            if not stage.broke_pipe():
                raise stage.explain(stage.proc.returncode, stage.stderr())
        last = failed[-1]
        raise last.explain(last.proc.returncode, last.stderr())


def scratch_folder(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder named after this process; first removes any such folder of a process
    that died without removing its own (a worker killed mid directory-format backup leaves a
    whole dump behind)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        pid = folder.name.removeprefix(prefix).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def compress_argv(compression: str) -> list[str] | None:
    if compression == Compression.ZSTD:
        return ["zstd", "-T0", f"-{settings.RUNWAY_BACKUP_ZSTD_LEVEL}", "-q", "-c"]
    if compression == Compression.GZIP:
        return ["gzip", "-6", "-c", "-n"]
    return None


def decompress_argv(compression: str) -> list[str] | None:
    if compression == Compression.ZSTD:
        return ["zstd", "-d", "-q", "-c"]
    if compression == Compression.GZIP:
        return ["gzip", "-d", "-c"]
    return None


def extension(fmt: str, compression: str) -> str:
    body = ".tar" if fmt == DumpFormat.DIRECTORY else ".dump"
    packed = {Compression.ZSTD: ".zst", Compression.GZIP: ".gz"}.get(compression, "")  # type: ignore[call-overload]
    return f"{body}{packed}.gpg"


class _Source:
    """gpg's output as Runway reads it: counted, with a tick at least every second."""

    def __init__(self, pipe: IO[bytes], tick: Callable[[int], None]) -> None:
        self.fd = pipe.fileno()
        self.total = 0
        self._tick = tick

    def tick(self) -> None:
        self._tick(self.total)

    def read(self, size: int = -1, /) -> bytes:
        size = size if size > 0 else PIPE_SIZE
        while True:
            ready, _, _ = select.select([self.fd], [], [], 1.0)
            self._tick(self.total)
            if ready:
                data = os.read(self.fd, min(size, PIPE_SIZE))
                self.total += len(data)
                return data


class _Heartbeat:
    """Progress and liveness on the row, at most every PROGRESS_EVERY_S seconds."""

    def __init__(self, backup_id: int) -> None:
        self.backup_id = backup_id
        self.last = 0.0

    def __call__(self, total: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        alive = Backup.objects.filter(pk=self.backup_id, state=BackupState.RUNNING).update(
            progress_bytes=total, heartbeat_at=timezone.now()
        )
        if not alive:
            raise Abandoned(
                "The backup was marked failed while it ran (its heartbeat was late); "
                "this attempt stopped and removed its upload."
            )


# --- Requesting and performing ---


def storage_base(db: ManagedDatabase) -> str:
    """Where ``db``'s backups go: its policy's storage URL, else RUNWAY_BACKUP_STORAGE."""
    policy = BackupPolicy.objects.filter(database=db).first()
    return (policy.storage_url if policy else "") or settings.RUNWAY_BACKUP_STORAGE


def object_key(backup: Backup) -> str:
    started = backup.started_at or timezone.now()
    stamp = started.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = extension(backup.format, backup.compression)
    return f"{backup.database.name}/{stamp}-{backup.pk}{suffix}"


@transaction.atomic
def request_backup(
    actor: Actor | None,
    db: ManagedDatabase,
    *,
    reason: str = "",
    format: str | None = None,
    compression: str | None = None,
    enqueue: bool = True,
) -> Backup:
    """Record a backup to take (audited) and queue it for a worker (``enqueue=False``: the caller
    performs it itself)."""
    from dashboard.backups.tasks import run_backup

    fmt = format or settings.RUNWAY_BACKUP_FORMAT
    packing = compression or settings.RUNWAY_BACKUP_COMPRESSION
    if fmt not in DumpFormat.values:
        raise ValueError(f"Unknown dump format {fmt!r}: use {' or '.join(DumpFormat.values)}.")
    if packing not in Compression.values:
        raise ValueError(f"Unknown compression {packing!r}: use {', '.join(Compression.values)}.")
    backup = Backup.objects.create(
        database=db,
        requested_by=actor if actor is not None and actor.pk else None,  # type: ignore[misc]
        reason=reason[:200],
        format=fmt,
        compression=packing,
        encrypted=True,
    )
    record(
        actor,
        "backup.requested",
        backup,
        details={"database": db.name, "format": fmt, "compression": packing, "reason": reason},
    )
    if enqueue:
        run_backup.delay_on_commit(backup.pk)
    return backup


def _claim(backup_id: int) -> bool:
    now = timezone.now()
    with transaction.atomic():
        claimed = Backup.objects.filter(pk=backup_id, state=BackupState.QUEUED).update(
            state=BackupState.RUNNING,
            started_at=now,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            progress_bytes=0,
            error="",
        )
        if claimed:
            backup = Backup.objects.get(pk=backup_id)
            record(None, "backup.started", backup, details={"attempt": backup.attempts})
    return bool(claimed)


def perform_backup(backup_id: int, *, retries_left: int = 0) -> Backup | None:
    """Take the queued backup ``backup_id``; None when it is not ours to take (safe to run twice).

    A transient failure with ``retries_left`` puts the row back in the queue and raises
    TransientBackupError (the task retries); any other failure, or the last attempt, ends in a
    failed backup. A running row with a stale heartbeat (its worker died: this call is the task
    redelivered) is failed and its upload aborted.
    """
    if not _claim(backup_id):
        reaped = reap_stale(backup_id=backup_id)
        return reaped[0] if reaped else None
    backup = Backup.objects.select_related("database").get(pk=backup_id)
    started = time.monotonic()
    try:
        taken = _take(backup, _Heartbeat(backup.pk))
    except Exception as exc:
        message, transient = describe(exc)
        duration = time.monotonic() - started
        if transient and retries_left > 0 and _clean_leftovers(Backup.objects.get(pk=backup_id)):
            _requeue(backup_id, message)
            raise TransientBackupError(message) from exc
        return _fail(backup_id, message, duration=duration, transient=transient)
    return _complete(backup_id, taken, duration=time.monotonic() - started)


@dataclass
class _Taken:
    stored: storage.Stored
    row_counts: dict[str, int]
    revision: str
    facts: dict[str, Any]


def _take(backup: Backup, heartbeat: _Heartbeat) -> _Taken:
    passphrase = gpg.check_passphrase(settings.RUNWAY_BACKUP_PASSPHRASE)
    db = backup.database
    password = credentials.password(db)
    base = storage.check_url(storage_base(db))
    key = object_key(backup)
    url = storage.join(base, key)
    Backup.objects.filter(pk=backup.pk).update(storage_url=url)
    tables = list(db.critical_tables)
    conn = pg.connect(
        db.dsn,
        password,
        timeout=settings.RUNWAY_CONNECT_TIMEOUT,
        autocommit=False,
        application_name="runway-backup",
    )
    with conn, ExitStack() as stack:
        snapshot = pg.export_snapshot(conn)
        version = conn.info.server_version
        pg.check_tables(conn, tables)
        pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="snapshot-counts"))
        sealer = stack.enter_context(gpg.Gpg(passphrase))
        chain = stack.enter_context(Chain())
        beat = lambda: heartbeat(0)  # noqa: E731
        if backup.format == DumpFormat.DIRECTORY:
            folder = Path(stack.enter_context(scratch_folder("runway-dump-")))
            dump_dir = folder / "dump"
            chain.start(
                "pg_dump",
                lambda err: pg.pg_dump(
                    db.dsn,
                    password,
                    snapshot=snapshot,
                    fmt="directory",
                    directory=dump_dir,
                    jobs=DIRECTORY_JOBS,
                    server_version=version,
                    stderr=err,
                ),
                lambda rc, err: pg.explain_tool("pg_dump", rc, err),
            )
            facts = pool.submit(_snapshot_facts, conn, tables)
            chain.wait(tick=beat)
            head = chain.run(
                "tar",
                ["tar", "-C", str(dump_dir), "-cf", "-", "."],
                stdin=None,
                stdout=subprocess.PIPE,
            )
        else:
            head = chain.start(
                "pg_dump",
                lambda err: pg.pg_dump(
                    db.dsn,
                    password,
                    snapshot=snapshot,
                    server_version=version,
                    stdout=subprocess.PIPE,
                    stderr=err,
                ),
                lambda rc, err: pg.explain_tool("pg_dump", rc, err),
            )
            facts = pool.submit(_snapshot_facts, conn, tables)
        packer = compress_argv(backup.compression)
        if packer is not None:
            head = chain.run(packer[0], packer, stdin=head.stdout, stdout=subprocess.PIPE)
        upstream = head.stdout
        sealed = chain.start(
            "gpg",
            lambda err: sealer.encrypt(stdin=upstream, stdout=subprocess.PIPE, stderr=err),
            gpg.explain,
        )
        upstream.close()  # type: ignore[union-attr]
        source = _Source(sealed.stdout, heartbeat)  # type: ignore[arg-type]

        def record_upload(upload_id: str) -> None:
            Backup.objects.filter(pk=backup.pk).update(upload_id=upload_id)

        def before_commit() -> None:
            # The object appears only if every program and the snapshot's counts succeeded.
            chain.wait(tick=source.tick)
            facts.result()

        stored = storage.put(
            base,
            key,
            source,
            on_upload_id=record_upload,
            before_commit=before_commit,
            tick=source.tick,
        )
        counts, revision, summary = facts.result()
    return _Taken(stored, counts, revision, summary)


def _snapshot_facts(
    conn: psycopg.Connection, tables: list[str]
) -> tuple[dict[str, int], str, dict[str, Any]]:
    counts = pg.row_counts(conn, tables)
    revision = pg.alembic_revision(conn)
    users = pg.users_summary(conn)
    return counts, revision, ({"users": users} if users is not None else {})


def describe(exc: BaseException) -> tuple[str, bool]:
    """A failure's message for a person (never a secret) and whether it is worth retrying."""
    if isinstance(
        exc, BackupError | gpg.GpgError | storage.StorageError | s3.S3Error | pg.ToolFailed
    ):
        return str(exc), bool(exc.transient)
    if isinstance(exc, SecretError):
        return f"{pg.PROBLEM_MESSAGES['secret']}: {exc}", False
    if isinstance(exc, pg.BadDsn | pg.MissingTables):
        return str(exc), False
    if isinstance(exc, psycopg.OperationalError):
        problem = pg.classify(exc)
        first = pg.redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        return f"{pg.PROBLEM_MESSAGES[problem]}: {first}", problem in ("unreachable", "timeout")
    if isinstance(exc, psycopg.Error):
        first = pg.redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        return f"The database refused: {first}", False
    logger.exception("backup failed unexpectedly", exc_info=exc)
    return f"Internal error: {exc.__class__.__name__}: {exc}", False


# --- Ending: completed, failed, queued again; cleaning up ---


def _complete(backup_id: int, taken: _Taken, *, duration: float) -> Backup:
    now = timezone.now()
    with transaction.atomic():
        done = Backup.objects.filter(pk=backup_id, state=BackupState.RUNNING).update(
            state=BackupState.COMPLETED,
            storage_url=taken.stored.url,
            upload_id="",
            size_bytes=taken.stored.size,
            sha256=taken.stored.sha256,
            progress_bytes=taken.stored.size,
            revision=taken.revision,
            row_counts=taken.row_counts,
            facts=taken.facts,
            heartbeat_at=now,
            finished_at=now,
            duration_s=round(duration, 3),
            error="",
        )
        backup = Backup.objects.select_related("database").get(pk=backup_id)
        if done:
            record(
                None,
                "backup.completed",
                backup,
                details={
                    "url": backup.storage_url,
                    "size_bytes": backup.size_bytes,
                    "sha256": backup.sha256,
                    "format": backup.format,
                    "compression": backup.compression,
                    "duration_s": backup.duration_s,
                    "revision": backup.revision,
                    "row_counts": backup.row_counts,
                },
            )
    if not done:
        # Reaped while finishing: the row says failed, so the object must not stay.
        try:
            storage.delete(taken.stored.url)
        except (storage.StorageError, s3.S3Error):
            logger.warning("could not delete %s of reaped backup #%s", taken.stored.url, backup_id)
    return backup


def _fail(backup_id: int, message: str, *, duration: float | None, transient: bool) -> Backup:
    cleaned = _clean_leftovers(Backup.objects.get(pk=backup_id))
    now = timezone.now()
    changes: dict[str, Any] = {"state": BackupState.FAILED, "error": message, "finished_at": now}
    if duration is not None:
        changes["duration_s"] = round(duration, 3)
    if cleaned:
        changes.update(upload_id="", storage_url="")
    with transaction.atomic():
        failed = Backup.objects.filter(pk=backup_id, state=BackupState.RUNNING).update(**changes)
        backup = Backup.objects.select_related("database").get(pk=backup_id)
        if failed:
            record(
                None,
                "backup.failed",
                backup,
                details={
                    "reason": message,
                    "transient": transient,
                    "attempts": backup.attempts,
                    "upload_removed": cleaned,
                },
            )
    return backup


def _requeue(backup_id: int, message: str) -> None:
    with transaction.atomic():
        Backup.objects.filter(pk=backup_id, state=BackupState.RUNNING).update(
            state=BackupState.QUEUED,
            error=f"Retrying after a transient failure: {message}",
            upload_id="",
            storage_url="",
            progress_bytes=0,
        )
        backup = Backup.objects.get(pk=backup_id)
        record(
            None,
            "backup.retrying",
            backup,
            details={"reason": message, "attempts": backup.attempts},
        )


def _clean_leftovers(backup: Backup) -> bool:
    """Abort the row's open upload and remove any object at its URL; True when nothing is left.

    Only for a backup that is not (or no longer) completed: its object can only be partial or
    unwanted. Without an upload id nothing was written: the id is recorded before any data."""
    if not backup.storage_url or not backup.upload_id:
        return True
    try:
        storage.abort(backup.storage_url, backup.upload_id)
        if storage.exists(backup.storage_url):
            storage.delete(backup.storage_url)
    except (storage.StorageError, s3.S3Error) as exc:
        logger.warning("backup #%s: leftovers not removed yet: %s", backup.pk, exc)
        return False
    return True


def remove_leftovers(backup: Backup, actor: Actor | None = None, *, why: str = "") -> bool:
    """Remove what a failed backup left in storage (an open upload, a partial or unwanted object)
    and clear its pointers to it, audited; True when nothing is left."""
    if backup.state != BackupState.FAILED:
        raise ValueError(f"backup #{backup.pk} is {backup.state}, not failed")
    url, upload_id = backup.storage_url, backup.upload_id
    if not _clean_leftovers(backup):
        return False
    with transaction.atomic():
        Backup.objects.filter(pk=backup.pk, state=BackupState.FAILED).update(
            upload_id="", storage_url=""
        )
        backup.refresh_from_db()
        record(
            actor,
            "backup.leftovers_removed",
            backup,
            details={"url": url, "upload_id": upload_id, "why": why},
        )
    return True


def stale_after() -> timedelta:
    return timedelta(seconds=settings.RUNWAY_BACKUP_STALE_SECONDS)


def reap_stale(*, now: datetime | None = None, backup_id: int | None = None) -> list[Backup]:
    """Fail running backups whose heartbeat is older than :func:`stale_after` (their worker died):
    abort the upload each left open, audit it. Returns the backups reaped."""
    cutoff = (now or timezone.now()) - stale_after()
    candidates = Backup.objects.filter(state=BackupState.RUNNING, heartbeat_at__lt=cutoff)
    if backup_id is not None:
        candidates = candidates.filter(pk=backup_id)
    reaped = []
    for pk, heartbeat in candidates.values_list("pk", "heartbeat_at"):
        assert heartbeat is not None  # filtered on it
        since = heartbeat.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        message = WORKER_DIED.format(since=since)
        with transaction.atomic():
            taken = Backup.objects.filter(
                pk=pk, state=BackupState.RUNNING, heartbeat_at=heartbeat
            ).update(state=BackupState.FAILED, finished_at=timezone.now(), error=message)
            if not taken:
                continue  # it beat meanwhile, or another reaper got it
            backup = Backup.objects.select_related("database").get(pk=pk)
            record(None, "backup.failed", backup, details={"reason": message, "reaped": True})
        # Failed first, then cleaned: a worker still alive after all sees it on its next beat.
        remove_leftovers(backup, why="worker died mid-backup")
        backup.refresh_from_db()
        reaped.append(backup)
    return reaped
