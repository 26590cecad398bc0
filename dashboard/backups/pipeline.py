"""Taking a backup: dump -> compress -> encrypt -> store, streamed end to end.

:func:`request_backup` records the wish (audited) and asks the job lifecycle for a job of kind
``backup`` (:mod:`dashboard.jobs.lifecycle`); a worker (or ``manage.py backup``, or a runbook
step, through ``jobs.run("backup", id)``) claims it and calls :func:`perform`, which runs::

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
an unreachable server) raise :class:`jobs.Transient`, after removing what the attempt stored, so
that the lifecycle queues it again (with backoff, up to the kind's ``max_attempts``). Progress
(bytes stored) goes out with the lifecycle's heartbeat. A worker that dies mid-backup leaves a
running row whose heart stopped and the id of its upload: the lifecycle's reaper interrupts it
and :func:`clean_up_interrupted` aborts the upload (or deletes the partial local file). A worker
that is still alive when that happens sees it at its next heartbeat, stops, and never completes
the row.
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
from datetime import UTC, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dashboard.audit.chain import Actor, record
from dashboard.backups.models import Backup, BackupPolicy, Compression, DumpFormat
from dashboard.databases import credentials
from dashboard.databases.models import ManagedDatabase
from dashboard.jobs import lifecycle as jobs
from dashboard.jobs.models import JobState
from dashboard.lib import gpg, pg, s3, storage
from dashboard.lib.secrets import SecretError

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 2.0  # the kinds' heartbeat: progress on the page moves this often
PIPE_SIZE = 1024 * 1024
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
DIRECTORY_JOBS = 2
# A backup or validation whose heart stopped this long ago is interrupted by the reaper
# (RUNWAY_JOB_STALE_SECONDS overrides it per kind; see settings.py for RUNWAY_BACKUP_STALE_SECONDS).
STALE_AFTER_S = 300


class BackupError(RuntimeError):
    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class Abandoned(BackupError):
    """The row stopped being ours while we ran (the reaper interrupted it)."""


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


class Ticker:
    """What the pipeline calls while it works (at least every second): the bytes stored so far
    go out with the lifecycle's next heartbeat; a job the reaper took from us, or one asked to
    stop, stops here."""

    def __init__(self, context: jobs.Context, what: str = "backup") -> None:
        self.context = context
        self.what = what

    def __call__(self, total: int | None = None) -> None:
        if total is not None:
            self.context.progress(progress_bytes=total)
        if self.context.lost:
            raise Abandoned(
                f"The {self.what} was interrupted while it ran (its heartbeat was late); "
                "this attempt stopped and removed what it had written."
            )
        self.context.check_cancelled()


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
    runs it itself, with ``jobs.run("backup", backup.pk)``)."""
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
        jobs.enqueue(backup)
    return backup


def perform(backup: Backup, context: jobs.Context) -> None:
    """The job's work (the lifecycle has claimed ``backup``): take it and end it, audited.

    A transient failure removes what the attempt stored and raises :class:`jobs.Transient` (the
    lifecycle queues it again); any other failure ends in a failed backup with its reason."""
    with transaction.atomic():
        Backup.objects.filter(pk=backup.pk).update(progress_bytes=0, storage_url="", upload_id="")
        record(
            None,
            "backup.started",
            backup,
            details={"attempt": backup.attempts, "worker": context.worker},
        )
    started = time.monotonic()
    try:
        taken = _take(backup, Ticker(context))
    except jobs.Cancelled:
        _forget_leftovers(backup.pk)
        raise
    except Exception as exc:
        message, transient = describe(exc)
        duration = time.monotonic() - started
        if transient and not context.lost and _forget_leftovers(backup.pk):
            raise jobs.Transient(message) from exc
        _fail(backup, message, duration=duration, transient=transient)
        return
    _complete(backup, taken, duration=time.monotonic() - started)


@dataclass
class _Taken:
    stored: storage.Stored
    row_counts: dict[str, int]
    revision: str
    facts: dict[str, Any]


def _take(backup: Backup, heartbeat: Ticker) -> _Taken:
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
        beat = lambda: heartbeat()  # noqa: E731
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
    conn: pg.Connection, tables: list[str]
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
    if isinstance(exc, pg.OperationalError):
        problem = pg.classify(exc)
        first = pg.redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        return f"{pg.PROBLEM_MESSAGES[problem]}: {first}", problem in ("unreachable", "timeout")
    if isinstance(exc, pg.Error):
        first = pg.redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        return f"The database refused: {first}", False
    logger.exception("backup failed unexpectedly", exc_info=exc)
    return f"Internal error: {exc.__class__.__name__}: {exc}", False


# --- Ending: succeeded or failed; cleaning up ---


def _complete(backup: Backup, taken: _Taken, *, duration: float) -> None:
    with transaction.atomic():
        done = backup.succeed(
            storage_url=taken.stored.url,
            upload_id="",
            size_bytes=taken.stored.size,
            sha256=taken.stored.sha256,
            progress_bytes=taken.stored.size,
            revision=taken.revision,
            row_counts=taken.row_counts,
            facts=taken.facts,
            duration_s=round(duration, 3),
            error="",
        )
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
        # Interrupted while finishing: the row is not succeeded, so the object must not stay.
        try:
            storage.delete(taken.stored.url)
        except (storage.StorageError, s3.S3Error):
            logger.warning("could not delete %s of reaped backup #%s", taken.stored.url, backup.pk)


def _fail(backup: Backup, message: str, *, duration: float | None, transient: bool) -> None:
    cleaned = _clean_leftovers(Backup.objects.get(pk=backup.pk))
    changes: dict[str, Any] = {}
    if duration is not None:
        changes["duration_s"] = round(duration, 3)
    if cleaned:
        changes.update(upload_id="", storage_url="")
    with transaction.atomic():
        if backup.fail(message, **changes):
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


def _forget_leftovers(backup_id: int) -> bool:
    """Remove what this attempt stored and clear the row's pointers to it (before a retry or a
    cancel); True when nothing is left."""
    if not _clean_leftovers(Backup.objects.get(pk=backup_id)):
        return False
    Backup.objects.filter(pk=backup_id).update(upload_id="", storage_url="", progress_bytes=0)
    return True


def _clean_leftovers(backup: Backup) -> bool:
    """Abort the row's open upload and remove any object at its URL; True when nothing is left.

    Only for a backup that is not (or no longer) succeeded: its object can only be partial or
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


UNFINISHED = (JobState.FAILED, JobState.INTERRUPTED, JobState.CANCELLED)


def remove_leftovers(backup: Backup, actor: Actor | None = None, *, why: str = "") -> bool:
    """Remove what a backup that did not succeed (failed, interrupted, cancelled) left in
    storage (an open upload, a partial or unwanted object) and clear its pointers to it,
    audited; True when nothing is left."""
    if backup.state not in UNFINISHED:
        raise ValueError(f"backup #{backup.pk} is {backup.state}: its object is not a leftover")
    url, upload_id = backup.storage_url, backup.upload_id
    if not _clean_leftovers(backup):
        return False
    with transaction.atomic():
        Backup.objects.filter(pk=backup.pk, state__in=UNFINISHED).update(
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


def clean_up_interrupted(backup: Backup) -> None:
    """The kind's clean-up once the reaper interrupted it: abort its open S3 multipart upload
    or delete its partial local file (audited). What cannot be removed now stays recorded on
    the row, and retention removes it later."""
    backup.refresh_from_db()
    if backup.upload_id or backup.storage_url:
        remove_leftovers(backup, why="interrupted: its worker stopped reporting")


def stale_after() -> timedelta:
    """How long a running backup may go without a heartbeat (the backup kind's timeout): also
    how old an upload no row knows must be before retention aborts it."""
    return timedelta(seconds=BACKUP.stale_seconds())


BACKUP = jobs.register(
    jobs.Kind(
        "backup",
        Backup,
        perform,
        stale_after=STALE_AFTER_S,
        # A backup waits behind others on a busy worker; one nobody took for an hour is lost.
        queued_after=3600,
        heartbeat_every=PROGRESS_EVERY_S,
        # Three retries of a transient failure (the network, a server starting), 30 s, 60 s,
        # 120 s apart.
        max_attempts=4,
        retry_backoff=30,
        on_interrupted=clean_up_interrupted,
        describe=lambda backup: f"backup #{backup.pk}",
    )
)
