"""Rehearsal: the pending revisions run on a throw-away copy of the database, timed.

:func:`request_rehearsal` records what is pending (from the last good connection check) and asks
the job lifecycle for it (job kind ``rehearsal``); :func:`perform` is its work, on a worker (or in
``manage.py rehearse``, through ``jobs.run``), once the lifecycle has claimed the row:

1. copies the database into ``runway_rehearsal_<id>``: with ``CREATE DATABASE ... TEMPLATE`` on
   the source's own server when nobody is connected to the source and its role may copy it
   (method "template"), else by restoring the newest completed backup with a passed validation
   onto the scratch server, as a validation does (method "backup");
2. checks that the copy is at the revision the rehearsal was requested from, and reads its
   schema (``pg_dump --schema-only``, normalized by :mod:`.schema_diff`): ``schema_before``;
3. runs each pending revision, oldest first, the way the database's revisions run in a deployment
   (:mod:`.runners`: Runway's online environment, or the project's own alembic), timing each
   (connecting included) while this thread samples ``pg_locks`` of
   the copy every 50 ms for backends waiting on a lock: the longest wait seen is the revision's
   ``lock_wait_ms``. A copy has no application traffic, so a wait there comes from the revision
   itself (a second session it opens, ``CREATE INDEX CONCURRENTLY`` waiting for transactions);
4. reads the copy's schema again, whatever happened to the revisions (``schema_after``: on a
   failed rehearsal, the schema the failure left); a schema that cannot be read is left empty;
5. drops the copy (``DROP DATABASE ... WITH (FORCE)``) whatever happened.

``total_seconds`` is the sum of the revisions' times: what the deployment would take on
data like production's (the copy itself is ``copy_seconds``). A failing revision stops the
rehearsal, which fails (see ``Rehearsal``); its timing has ``ok`` False and the (redacted) error.

The lifecycle's heartbeat thread beats all along, the longest migration on the copy included;
each revision runs in a thread beside this one, which samples the copy's locks and notices when
the row is no longer ours. What is known so far (where the copy lives, each revision's timing)
is written on the row as soon as it is known, so the page shows it and the reaper knows which
copy to drop. A worker that dies stops the heart: the reaper (``jobs.reap``) interrupts the
rehearsal after the kind's ``stale_after`` and drops its copy (:func:`_drop_left_copy`). A
cancel request is honoured between the copy and each revision.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from dashboard.audit.chain import Actor, record
from dashboard.backups import pipeline, validation
from dashboard.backups.models import Backup
from dashboard.databases import credentials, run_modes
from dashboard.databases.models import ManagedDatabase
from dashboard.jobs import lifecycle as jobs
from dashboard.jobs.models import JobState
from dashboard.lib import alembic, gpg, pg
from dashboard.schema import execution, runners, schema_diff
from dashboard.schema.models import Rehearsal
from dashboard.schema.status import last_good_check, status_of

logger = logging.getLogger(__name__)

COPY_PREFIX = "runway_rehearsal_"
MAINTENANCE_DB = "postgres"
SAMPLE_EVERY_S = 0.05
LOST = "The rehearsal stopped being this worker's while it ran (the reaper interrupted it)."


class RehearsalError(ValueError):
    """A rehearsal that cannot be requested or cannot be done; the message says why."""


def copy_name(rehearsal_id: int) -> str:
    return f"{COPY_PREFIX}{rehearsal_id}"


# --- Asking ---


@transaction.atomic
def request_rehearsal(
    actor: Actor | None, db: ManagedDatabase, *, enqueue: bool = True
) -> Rehearsal:
    """Record a rehearsal of what is pending on ``db`` (audited) and queue it for a worker
    (``enqueue=False``: the caller runs it, ``jobs.run("rehearsal", rehearsal.pk)``).
    RehearsalError when the current revision is unknown or nothing is pending."""
    check = last_good_check(db)
    if check is None:
        raise RehearsalError(
            f"The current revision of {db.name} is not known: test its connection first."
        )
    status = status_of(db, check)
    history = status.history
    if history is None:
        raise RehearsalError(status.error)
    if not history.current:
        raise RehearsalError(
            f"{db.name} has no alembic_version row: stamp it before rehearsing its migrations."
        )
    if history.unknown_current:
        unknown = ", ".join(history.unknown_current)
        raise RehearsalError(
            f"{db.name} is at {unknown}, which no script in {db.script_location} defines: "
            "the pending revisions are unknown."
        )
    if len(history.heads) != 1:
        raise RehearsalError(
            f"The scripts have {len(history.heads)} heads ({', '.join(history.heads)}): merge "
            "them before rehearsing."
        )
    if not history.pending:
        raise RehearsalError(
            f"Nothing is pending on {db.name}: it is at {', '.join(history.current)}, the head."
        )
    rehearsal = Rehearsal.objects.create(
        database=db,
        requested_by=actor if actor is not None and actor.pk else None,  # type: ignore[misc]
        from_revisions=sorted(history.current),
        to_revision=history.heads[0],
        revisions=list(history.pending),
    )
    record(
        actor,
        "schema.rehearsal_requested",
        rehearsal,
        details={
            "database": db.name,
            "from": rehearsal.from_revisions,
            "to": rehearsal.to_revision,
            "revisions": rehearsal.revisions,
        },
    )
    if enqueue:
        jobs.enqueue(rehearsal)
    return rehearsal


def latest_rehearsal(db: ManagedDatabase, revisions: Sequence[str]) -> Rehearsal | None:
    """The newest succeeded rehearsal of exactly ``revisions`` (oldest first) on ``db``: the
    timings the pages, the approval and the execution trigger use. A failed, interrupted or
    cancelled one times nothing. Its schemas (up to 2 MB each) are read when asked for."""
    return (
        Rehearsal.objects.filter(database=db, state=JobState.SUCCEEDED, revisions=list(revisions))
        .defer("schema_before", "schema_after")
        .order_by("-finished_at", "-pk")
        .first()
    )


# --- Performing ---


@dataclass
class _Outcome:
    method: str = ""
    backup_id: int | None = None
    copy_seconds: float | None = None
    timings: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    drop_error: str = ""
    end: str = ""  # cancelled or interrupted; else failed when there is an error, or succeeded
    # Where the copy lives (a DSN of an existing database there, and its password): set before
    # the copy is made, so that it is dropped whatever happens next.
    server: tuple[str, str | None] | None = None
    # The copy's schema before and after the revisions (schema_diff.normalize, bounded).
    schema_before: str = ""
    schema_after: str = ""


@dataclass
class _Copy:
    dsn: str
    password: str | None


class _Tick:
    """Called while blocking work runs beside the job's thread: raises when the row is no longer
    ours (the reaper interrupted it), and, where the work can stop part-way (a restore), when a
    cancel was asked for."""

    def __init__(self, context: jobs.Context, *, cancel: bool = False) -> None:
        self.context = context
        self.cancel = cancel

    def __call__(self) -> None:
        if self.context.lost:
            raise RehearsalError(LOST)
        if self.cancel:
            self.context.check_cancelled()


def _show(rehearsal: Rehearsal, **fields: Any) -> None:
    """Write what is known so far (where the copy lives, the timings) on the row now, with a
    beat, not at the next heartbeat: the reaper must know where a copy is before it exists, and
    the page shows each revision's time as it ends."""
    if not rehearsal.beat(**fields):
        raise RehearsalError(LOST)


def perform(rehearsal: Rehearsal, context: jobs.Context) -> None:
    """The job's work (the lifecycle has claimed the row): copy, run, time, drop the copy, and
    end the row (succeeded, failed or cancelled) with its audit event."""
    record(
        None,
        "schema.rehearsal_started",
        rehearsal,
        details={
            "database": rehearsal.database.name,
            "revisions": rehearsal.revisions,
            "worker": context.worker,
        },
    )
    outcome = _Outcome()
    try:
        _rehearse(rehearsal, outcome, context)
    except jobs.Cancelled as exc:
        outcome.error, outcome.end = str(exc) or "Cancelled on request.", JobState.CANCELLED
    except Exception as exc:
        outcome.error = _describe(exc)
    except BaseException:  # Ctrl-C in manage.py rehearse, a worker's hard stop: end the row
        outcome.error = outcome.error or "The rehearsal was interrupted before it finished."
        outcome.end = JobState.INTERRUPTED
        _finish(rehearsal, outcome)
        raise
    _finish(rehearsal, outcome)


def _describe(exc: Exception) -> str:
    if isinstance(
        exc,
        RehearsalError | runners.Refused | alembic.AlembicError | alembic.NotAnAlembicProject,
    ):
        return str(exc)
    return pipeline.describe(exc)[0]


def _rehearse(rehearsal: Rehearsal, outcome: _Outcome, context: jobs.Context) -> None:
    name = copy_name(rehearsal.pk)
    problem = run_modes.refusal(rehearsal.database)
    if problem:  # before copying anything
        raise RehearsalError(f"Refused to run the project's alembic: {problem} Nothing ran.")
    try:
        context.check_cancelled()
        copy = _make_copy(rehearsal, outcome, context)
        with pg.connect(
            copy.dsn, copy.password, timeout=settings.RUNWAY_CONNECT_TIMEOUT
        ) as watcher:
            found = sorted(filter(None, pg.alembic_revision(watcher).split(",")))
            if found != rehearsal.from_revisions:
                raise RehearsalError(
                    f"The copy is at {', '.join(found) or 'no revision'}, but "
                    f"{rehearsal.database.name} was at {', '.join(rehearsal.from_revisions)} when "
                    "the rehearsal was requested: check its connection and rehearse again."
                )
            outcome.schema_before = _schema_of(rehearsal, copy, watcher, "before")
            try:
                _run_revisions(rehearsal, copy, watcher, outcome, context)
            finally:
                if not context.lost:  # else the reaper drops the copy
                    outcome.schema_after = _schema_of(rehearsal, copy, watcher, "after")
    finally:
        if outcome.server is not None:
            outcome.drop_error = validation.drop_scratch(*outcome.server, name).replace(
                "scratch database", "rehearsal copy"
            )


# --- The copy ---


def _make_copy(rehearsal: Rehearsal, outcome: _Outcome, context: jobs.Context) -> _Copy:
    db = rehearsal.database
    password = credentials.password(db)
    name = copy_name(rehearsal.pk)
    source = pg.parse_dsn(db.dsn)["dbname"]
    maintenance = pg.with_dbname(db.dsn, MAINTENANCE_DB)
    refusal = _template_refusal(maintenance, password, source)
    if not refusal:
        outcome.method, outcome.server = Rehearsal.Method.TEMPLATE, (maintenance, password)
        _show(rehearsal, method=outcome.method)
        job = _beside(
            "rehearsal-copy", lambda: _clone(maintenance, password, name, source), _Tick(context)
        )
        if job.error is None:
            outcome.copy_seconds = round(job.seconds, 3)
            return _Copy(pg.with_dbname(db.dsn, name), password)
        if not isinstance(job.error, pg.errors.ObjectInUse):
            raise job.error
        outcome.method = ""
        refusal = f"a session connected to {source} while it was being copied"
    return _restore_copy(rehearsal, outcome, context, refusal)


def _template_refusal(maintenance: str, password: str | None, source: str) -> str:
    """Why ``CREATE DATABASE ... TEMPLATE source`` cannot be used; "" when it can."""
    user = pg.parse_dsn(maintenance).get("user", "the role")
    try:
        with pg.connect(maintenance, password, timeout=settings.RUNWAY_CONNECT_TIMEOUT) as admin:
            sessions = pg.other_sessions(admin, source)
            allowed = pg.can_clone(admin, source)
    except pg.Error as exc:
        detail = pipeline.describe(exc)[0]
        return f"{user} cannot reach the maintenance database {MAINTENANCE_DB} ({detail})"
    reasons = []
    if sessions:
        verb = "session is" if sessions == 1 else "sessions are"
        reasons.append(f"{sessions} {verb} connected to {source}")
    if not allowed:
        reasons.append(
            f"{user} may not copy {source} (CREATE DATABASE … TEMPLATE needs CREATEDB and "
            "ownership of the source)"
        )
    return ", and ".join(reasons)


def _clone(maintenance: str, password: str | None, name: str, source: str) -> None:
    with pg.connect(maintenance, password, timeout=settings.RUNWAY_CONNECT_TIMEOUT) as admin:
        pg.drop_database(admin, name)  # a leftover of an attempt that died
        pg.create_database_from_template(admin, name, source)


def _validated_backup(db: ManagedDatabase) -> Backup | None:
    return Backup.objects.filter(database=db).validated().order_by("-created_at", "-pk").first()


def _restore_copy(
    rehearsal: Rehearsal, outcome: _Outcome, context: jobs.Context, refusal: str
) -> _Copy:
    db = rehearsal.database
    backup = _validated_backup(db)
    if backup is None:
        raise RehearsalError(
            f"{refusal} and no validated backup exists: take and validate a backup first."
        )
    at = sorted(filter(None, backup.revision.split(",")))
    if at != rehearsal.from_revisions:
        raise RehearsalError(
            f"{refusal}, and the newest validated backup #{backup.pk} "
            f"is at {', '.join(at) or 'no revision'} while {db.name} is at "
            f"{', '.join(rehearsal.from_revisions)}: take and validate a fresh backup first."
        )
    passphrase = gpg.check_passphrase(settings.RUNWAY_BACKUP_PASSPHRASE)
    server_dsn, password = validation.scratch_server(db)
    name = copy_name(rehearsal.pk)
    outcome.method, outcome.backup_id = Rehearsal.Method.BACKUP, backup.pk
    outcome.server = (server_dsn, password)
    _show(rehearsal, method=outcome.method, backup_id=backup.pk)
    started = time.monotonic()
    version = validation.create_scratch(server_dsn, password, name)
    dsn = pg.with_dbname(server_dsn, name)
    tick = _Tick(context, cancel=True)
    read = validation.restore_backup(backup, dsn, password, passphrase, version, tick)
    if read is not None and read != backup.sha256:
        raise RehearsalError(
            f"Backup #{backup.pk} read back with sha256 {read}, not the {backup.sha256} recorded: "
            "the stored object changed. Validate it again."
        )
    outcome.copy_seconds = round(time.monotonic() - started, 3)
    return _Copy(dsn, password)


# --- The copy's schema ---

# Alembic's version table changes on every revision; its row is the revisions' own business.
VERSION_TABLES = ("*.alembic_version",)


def _schema_of(rehearsal: Rehearsal, copy: _Copy, watcher: pg.Connection, when: str) -> str:
    """The copy's schema (pg_dump's, normalized, at most schema_diff.LIMIT_BYTES); "" when it
    cannot be read, which leaves the rehearsal's own outcome alone (the log says why)."""
    started = time.monotonic()
    try:
        dump = pg.schema_dump(
            copy.dsn,
            copy.password,
            server_version=pg.server_version_num(watcher),
            exclude_tables=VERSION_TABLES,
        )
    except (pg.ToolFailed, pg.Error, OSError) as exc:
        logger.warning("rehearsal %s: the schema %s was not read: %s", rehearsal.pk, when, exc)
        return ""
    text = schema_diff.bounded(schema_diff.normalize(dump))
    logger.info(
        "rehearsal %s: schema %s read in %.3f s (%d bytes)",
        rehearsal.pk,
        when,
        time.monotonic() - started,
        len(text),
    )
    return text


# --- The revisions ---


class _Job(threading.Thread):
    """Blocking work (a copy, an Alembic command) off the job's thread, which samples locks and
    watches the row meanwhile."""

    def __init__(self, name: str, work: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.work = work
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        started = time.monotonic()
        try:
            self.work()
        except BaseException as exc:
            self.error = exc
        finally:
            self.seconds = time.monotonic() - started


def _beside(name: str, work: Callable[[], None], tick: Callable[[], None]) -> _Job:
    """Run ``work`` in a thread, calling ``tick`` every SAMPLE_EVERY_S until it ends; the job
    holds what ``work`` raised. When ``tick`` raises, ``work`` is still waited for (the copy is
    dropped next, and must not be in the making then)."""
    job = _Job(name, work)
    job.start()
    try:
        tick()
        while job.is_alive():
            job.join(SAMPLE_EVERY_S)
            if job.is_alive():
                tick()
    finally:
        job.join()
    return job


class _Sampler:
    """The longest lock wait seen in the copy; sampling stops quietly if the query fails."""

    def __init__(self, watcher: pg.Connection) -> None:
        self.watcher = watcher
        self.longest_ms = 0.0
        self.broken = False

    def __call__(self) -> None:
        if self.broken:
            return
        try:
            waits = pg.lock_waits(self.watcher)
        except pg.Error as exc:
            logger.warning("lock wait sampling stopped: %s", exc)
            self.broken = True
            return
        if waits:
            self.longest_ms = max(self.longest_ms, waits[0].waited_ms)


def _run_revisions(
    rehearsal: Rehearsal,
    copy: _Copy,
    watcher: pg.Connection,
    outcome: _Outcome,
    context: jobs.Context,
) -> None:
    # The same runner and server options as the real migration.
    runner = runners.runner_for(
        rehearsal.database,
        copy.dsn,
        copy.password,
        options=execution.timeouts(),
        log=lambda line: logger.debug("rehearsal %s: %s", rehearsal.pk, line),
    )
    _warm_up()
    try:
        for revision in rehearsal.revisions:
            context.check_cancelled()
            timing = _timed(runner, revision, _Sampler(watcher), _Tick(context))
            outcome.timings.append(timing)
            _show(rehearsal, timings=outcome.timings)
            if not timing["ok"]:
                raise RehearsalError(f"Revision {revision} failed: {timing['error']}")
    finally:
        runner.close()


def _warm_up() -> None:
    """Import Alembic and SQLAlchemy's psycopg dialect before the clock starts: the first
    import takes about a second, which is no revision's doing."""
    for module in ("alembic.operations", "sqlalchemy.dialects.postgresql.psycopg"):
        importlib.import_module(module)


def _timed(
    runner: runners.Runner, revision: str, sampler: _Sampler, watch: _Tick
) -> dict[str, Any]:
    def tick() -> None:
        sampler()
        watch()

    job = _beside(f"rehearsal-{revision}", lambda: runner.run(revision, "upgrade"), tick)
    if job.error is not None and not isinstance(job.error, runners.RevisionFailed):
        raise job.error
    error = str(job.error) if job.error is not None else ""
    return {
        "revision": revision,
        "seconds": round(job.seconds, 3),
        "lock_wait_ms": round(sampler.longest_ms, 1),
        "ok": not error,
        "error": error,
    }


# --- Ending ---


def _finish(rehearsal: Rehearsal, outcome: _Outcome) -> None:
    """End the row with what was measured, audited in the same transaction; nothing when the
    row is no longer ours (the reaper interrupted it, and audited that)."""
    timings = outcome.timings
    total = round(sum(t["seconds"] for t in timings), 3) if timings else None
    longest = max((t["lock_wait_ms"] for t in timings), default=None)
    fields = {
        "method": outcome.method,
        "backup_id": outcome.backup_id,
        "copy_seconds": outcome.copy_seconds,
        "timings": timings,
        "total_seconds": total,
        "longest_lock_wait_ms": longest,
        "drop_error": outcome.drop_error,
        "schema_before": outcome.schema_before,
        "schema_after": outcome.schema_after,
    }
    end = outcome.end or (JobState.FAILED if outcome.error else JobState.SUCCEEDED)
    with transaction.atomic():
        if end == JobState.SUCCEEDED:
            moved = rehearsal.succeed(**fields)
        elif end == JobState.FAILED:
            moved = rehearsal.fail(outcome.error, **fields)
        elif end == JobState.CANCELLED:
            moved = rehearsal.cancelled(outcome.error, **fields)
        else:
            moved = rehearsal.beat(**fields) and rehearsal.interrupt(outcome.error)
        if not moved:
            return
        failed = next((t["revision"] for t in timings if not t["ok"]), None)
        record(
            None,
            "schema.rehearsed",
            rehearsal,
            details={
                "database": rehearsal.database.name,
                "state": str(end),
                "method": outcome.method,
                "backup": outcome.backup_id,
                "revisions": rehearsal.revisions,
                "rehearsed": [t["revision"] for t in timings],
                "failed_revision": failed,
                "copy_seconds": outcome.copy_seconds,
                "total_seconds": total,
                "longest_lock_wait_ms": longest,
                "error": outcome.error,
                "drop_error": outcome.drop_error,
            },
        )


def _drop_left_copy(rehearsal: Rehearsal) -> None:
    """The kind's clean-up when the reaper interrupts a rehearsal: drop its copy, wherever the
    row says it was being made (``method`` is written before the copy exists)."""
    db = rehearsal.database
    server: tuple[str, str | None]
    try:
        if rehearsal.method == Rehearsal.Method.TEMPLATE:
            server = (pg.with_dbname(db.dsn, MAINTENANCE_DB), credentials.password(db))
        elif rehearsal.method == Rehearsal.Method.BACKUP:
            server = validation.scratch_server(db)
        else:
            return  # died before making a copy
    except Exception as exc:
        logger.warning("rehearsal copy %s left: %s", copy_name(rehearsal.pk), exc)
        return
    problem = validation.drop_scratch(*server, copy_name(rehearsal.pk))
    if problem:
        Rehearsal.objects.filter(pk=rehearsal.pk).update(drop_error=problem)


jobs.register(
    jobs.Kind(
        "rehearsal",
        Rehearsal,
        perform,
        # The heart beats from the lifecycle's own thread every 10 s whatever the rehearsal does
        # (a restore, a long migration on the copy), so two minutes without a beat is a dead
        # worker, however long the revisions take. A rehearsal may wait behind other long jobs
        # (a backup, another rehearsal) on busy workers: an hour unclaimed means none is coming.
        # No retry: a person asks again, after reading why.
        stale_after=120,
        queued_after=3600,
        heartbeat_every=10,
        max_attempts=1,
        on_interrupted=_drop_left_copy,
    )
)
