"""Proving a backup restores: fetch -> decrypt -> decompress -> pg_restore into a scratch database,
then integrity queries. The scratch database is dropped whatever happens.

The object streams from storage through Runway (which hashes it: the stored object must still be
the one recorded) into ``gpg --decrypt | zstd -d | pg_restore``; nothing lands on disk for the
custom format. The scratch database lives on ``RUNWAY_SCRATCH_DSN``'s server when that is set,
else beside the source database, created by the source's own role (which then needs CREATEDB).

Every integrity check is recorded as ``{name, ok, expected, found, detail}``: the row count of each
critical table against the count taken in the dump's own snapshot, orphaned rows for every foreign
key in the restored database, the seed's user/plan query against its answer at dump time, the
Alembic revision, and the sha256 of the object read.

A validation is a job of kind ``validation`` (:mod:`dashboard.jobs.lifecycle`):
:func:`request_validation` asks for one, a worker (or ``manage.py validate_backup``, or a
runbook step, through ``jobs.run("validation", id)``) runs :func:`perform`. It succeeds when the
integrity queries ran (``passed`` says whether every check held) and fails when it could not get
that far (see the model's docstring). A transient failure raises :class:`jobs.Transient` (the
lifecycle retries it); a worker that dies mid-restore is interrupted by the reaper, which drops
its scratch database (:func:`clean_up_interrupted`).
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from dashboard.audit.chain import Actor, record
from dashboard.backups import pipeline
from dashboard.backups.models import Backup, DumpFormat, Validation
from dashboard.databases import credentials
from dashboard.databases.models import ManagedDatabase
from dashboard.jobs import lifecycle as jobs
from dashboard.lib import gpg, pg, storage

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024
# The scratch database is thrown away: no need to wait for its WAL to reach the disk.
RESTORE_OPTIONS = "-c synchronous_commit=off"
RESTORE_JOBS = 2


def scratch_name(validation: Validation) -> str:
    return f"runway_scratch_{validation.pk}"


def scratch_server(db: ManagedDatabase) -> tuple[str, str | None]:
    """The DSN (of an existing database to connect to) and password used to create, restore
    into and drop scratch databases."""
    if settings.RUNWAY_SCRATCH_DSN:
        return settings.RUNWAY_SCRATCH_DSN, credentials.scratch_password()
    return db.dsn, credentials.password(db)


@transaction.atomic
def request_validation(actor: Actor | None, backup: Backup, *, enqueue: bool = True) -> Validation:
    """Record a validation of a completed backup (audited) and queue it (``enqueue=False``: the
    caller runs it, with ``jobs.run("validation", validation.pk)``). ValueError for a backup
    that is not completed (queued, running, failed, interrupted, cancelled or pruned)."""
    backup = Backup.objects.select_for_update().get(pk=backup.pk)
    if not backup.completed:
        raise ValueError(
            f"Backup #{backup.pk} is {backup.outcome_label.lower()}: only a completed "
            "backup can be validated."
        )
    validation = Validation.objects.create(
        backup=backup,
        requested_by=actor if actor is not None and actor.pk else None,  # type: ignore[misc]
    )
    record(
        actor,
        "validation.requested",
        validation,
        details={"backup": backup.pk, "database": backup.database.name},
    )
    if enqueue:
        jobs.enqueue(validation)
    return validation


def perform(validation: Validation, context: jobs.Context) -> None:
    """The job's work (the lifecycle has claimed ``validation``): restore, check, drop the
    scratch database, and end it, audited."""
    with transaction.atomic():
        Validation.objects.filter(pk=validation.pk).update(checks=[])
        record(
            None,
            "validation.started",
            validation,
            details={
                "backup": validation.backup_id,
                "attempt": validation.attempts,
                "worker": context.worker,
            },
        )
    outcome = _Outcome()
    try:
        _validate(validation, outcome, pipeline.Ticker(context, "validation"))
    except jobs.Cancelled:
        raise  # the scratch database is already dropped
    except Exception as exc:
        message, transient = pipeline.describe(exc)
        if outcome.drop_error:
            message += f" {outcome.drop_error}"
        if transient and not context.lost:
            raise jobs.Transient(message) from exc  # the next attempt drops a leftover first
        outcome.error = message
    _finish(validation, outcome)


class _Outcome:
    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []
        self.restore_s: float | None = None
        self.queries_s: float | None = None
        self.error = ""
        self.drop_error = ""


def _validate(validation: Validation, outcome: _Outcome, heartbeat: pipeline.Ticker) -> None:
    backup = validation.backup
    if not backup.completed:
        raise pipeline.BackupError(
            f"Backup #{backup.pk} is {backup.outcome_label.lower()}: nothing to restore."
        )
    passphrase = gpg.check_passphrase(settings.RUNWAY_BACKUP_PASSPHRASE)
    server_dsn, password = scratch_server(backup.database)
    name = scratch_name(validation)
    Validation.objects.filter(pk=validation.pk).update(scratch_database=name)
    version = create_scratch(server_dsn, password, name)
    try:
        scratch_dsn = pg.with_dbname(server_dsn, name)
        started = time.monotonic()
        read = restore_backup(backup, scratch_dsn, password, passphrase, version, heartbeat)
        outcome.restore_s = round(time.monotonic() - started, 3)
        if read is not None:
            outcome.checks.append(
                check("sha256 of the stored object", read == backup.sha256, backup.sha256, read)
            )
        started = time.monotonic()
        with pg.connect(scratch_dsn, password, timeout=settings.RUNWAY_CONNECT_TIMEOUT) as conn:
            outcome.checks += integrity_checks(conn, backup)
        outcome.queries_s = round(time.monotonic() - started, 3)
    finally:
        outcome.drop_error = drop_scratch(server_dsn, password, name)


def create_scratch(server_dsn: str, password: str | None, name: str) -> int:
    """Create the (empty) scratch database ``name`` (dropping a leftover of that name first);
    return the server's version number."""
    with pg.connect(server_dsn, password, timeout=settings.RUNWAY_CONNECT_TIMEOUT) as admin:
        pg.drop_database(admin, name)  # a leftover of an attempt that died
        try:
            pg.create_database(admin, name)
        except pg.errors.InsufficientPrivilege:
            user = pg.parse_dsn(server_dsn).get("user", "the role")
            raise pipeline.BackupError(
                f"{user} may not create the scratch database {name}: grant it CREATEDB, or set "
                "RUNWAY_SCRATCH_DSN (and RUNWAY_SCRATCH_PASSWORD_REF) to a server and a role "
                "that may."
            ) from None
        return admin.info.server_version


def drop_scratch(server_dsn: str, password: str | None, name: str) -> str:
    """DROP DATABASE ... WITH (FORCE); "" when done, else what went wrong (never raises)."""
    try:
        with pg.connect(server_dsn, password, timeout=settings.RUNWAY_CONNECT_TIMEOUT) as admin:
            pg.drop_database(admin, name)
        return ""
    except Exception as exc:  # the validation's own outcome matters more; report, don't mask it
        logger.warning("could not drop scratch database %s: %s", name, exc)
        return f"The scratch database {name} could not be dropped: {pipeline.describe(exc)[0]}"


class _Feeder(threading.Thread):
    """Copies the stored object into gpg's stdin, hashing it on the way."""

    def __init__(self, body: Any, sink: Any) -> None:
        super().__init__(name="backup-fetch", daemon=True)
        self.body = body
        self.sink = sink
        self.sha = hashlib.sha256()
        self.complete = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while chunk := self.body.read(CHUNK):
                self.sha.update(chunk)
                self.sink.write(chunk)
            self.complete = True
        except BrokenPipeError:
            pass  # gpg stopped reading: the chain says why
        except BaseException as exc:
            self.error = exc
        finally:
            with suppress(BrokenPipeError):
                self.sink.close()


def restore_backup(
    backup: Backup,
    scratch_dsn: str,
    password: str | None,
    passphrase: str,
    server_version: int,
    tick: Callable[[], None],
    *,
    clean: bool = False,
    options: str = RESTORE_OPTIONS,
) -> str | None:
    """Stream the backup into the (empty) database ``scratch_dsn``; the sha256 of what was read
    (None when the read stopped early). ``tick`` is called while the tools run (a heartbeat; it
    may raise to stop them). ``clean``: into a database that has the objects (a rollback's
    restore into the database itself, one transaction: see ``pg.pg_restore``)."""
    with ExitStack() as stack:
        body = storage.open_read(backup.storage_url)
        stack.callback(body.close)
        opener = stack.enter_context(gpg.Gpg(passphrase))
        chain = stack.enter_context(pipeline.Chain())
        head = chain.start(
            "gpg",
            lambda err: opener.decrypt(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err),
            gpg.explain,
        )
        pipeline.widen_pipe(head.stdin)
        feeder = _Feeder(body, head.stdin)
        feeder.start()
        stack.callback(feeder.join)
        unpack = pipeline.decompress_argv(backup.compression)
        if unpack is not None:
            head = chain.run(unpack[0], unpack, stdin=head.stdout, stdout=subprocess.PIPE)

        def restore(source: Path | None, stdin: Any = None) -> None:
            chain.start(
                "pg_restore",
                lambda err: pg.pg_restore(
                    scratch_dsn,
                    password,
                    source=source,
                    jobs=RESTORE_JOBS,
                    stdin=stdin,
                    stderr=err,
                    server_version=server_version,
                    options=options,
                    clean=clean,
                ),
                lambda rc, err: pg.explain_tool("pg_restore", rc, err),
            )

        try:
            if backup.format == DumpFormat.DIRECTORY:
                folder = Path(stack.enter_context(pipeline.scratch_folder("runway-restore-")))
                chain.run(
                    "tar",
                    ["tar", "-x", "-C", str(folder)],
                    stdin=head.stdout,
                    stdout=subprocess.DEVNULL,
                )
                chain.wait(tick=tick)
                restore(folder)
            else:
                upstream = head.stdout
                restore(None, upstream)
                upstream.close()  # type: ignore[union-attr]
            chain.wait(tick=tick)
        except Exception as exc:
            feeder.join()
            if feeder.error is not None:
                raise _fetch_error(feeder.error) from exc
            raise
        feeder.join()
        if feeder.error is not None:
            raise _fetch_error(feeder.error)
        return feeder.sha.hexdigest() if feeder.complete else None


def _fetch_error(exc: BaseException) -> Exception:
    message, transient = pipeline.describe(exc)
    return pipeline.BackupError(f"Reading the backup failed: {message}", transient=transient)


# --- Integrity queries ---


def check(name: str, ok: bool, expected: Any, found: Any, detail: str = "") -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "expected": expected, "found": found, "detail": detail}


def integrity_checks(conn: pg.Connection, backup: Backup) -> list[dict[str, Any]]:
    """Row counts of the critical tables, orphaned rows for every foreign key, the seed's user/plan
    query and the Alembic revision of a restored database, against the backup's record."""
    checks = []
    for table, expected in backup.row_counts.items():
        try:
            pg.check_tables(conn, [table])
        except pg.MissingTables:
            checks.append(check(f"rows in {table}", False, expected, None, "missing after restore"))
            continue
        found = pg.row_counts(conn, [table])[table]
        checks.append(check(f"rows in {table}", found == expected, expected, found))
    for fk in pg.foreign_keys(conn):
        orphans = pg.orphan_count(conn, fk)
        checks.append(check(f"orphaned rows: {fk}", orphans == 0, 0, orphans, fk.name))
    users = pg.users_summary(conn)
    recorded = backup.facts.get("users")
    if users is not None or recorded is not None:
        checks.append(_users_check(backup, recorded, users))
    revision = pg.alembic_revision(conn)
    checks.append(
        check(
            "Alembic revision",
            revision == backup.revision,
            backup.revision or "(none)",
            revision or "(none)",
        )
    )
    return checks


def _summary(users: dict[str, Any] | None) -> str | None:
    if users is None:
        return None
    latest = users["latest_user"] or "none"
    return f"{users['user_count']} users, {users['plan_count']} plans, newest {latest}"


def _users_check(
    backup: Backup, recorded: dict[str, Any] | None, users: dict[str, Any] | None
) -> dict[str, Any]:
    name = "users and plans (the seed's query)"
    detail = pg.USERS_QUERY
    if users is None:
        return check(name, False, _summary(recorded), None, "no users table after restore")
    if recorded is not None:
        return check(name, users == recorded, _summary(recorded), _summary(users), detail)
    # A backup taken without the query's answer: compare with what it did record.
    expected_count = backup.row_counts.get("users", users["user_count"])
    started = backup.started_at.isoformat() if backup.started_at else None
    ok = (
        users["user_count"] == expected_count
        and (users["plan_count"] > 0 or users["user_count"] == 0)
        and (not started or not users["latest_user"] or users["latest_user"] <= started)
    )
    expected = f"{expected_count} users, at least one plan, none newer than the dump"
    return check(name, ok, expected, _summary(users), detail)


# --- Ending ---


def _finish(validation: Validation, outcome: _Outcome) -> None:
    """Succeeded (passed or not) when the integrity queries ran and the scratch database is
    gone; failed when it could not get there."""
    failed_checks = [c["name"] for c in outcome.checks if not c["ok"]]
    error = outcome.error or outcome.drop_error
    result: dict[str, Any] = {
        "checks": outcome.checks,
        "restore_s": outcome.restore_s,
        "queries_s": outcome.queries_s,
    }
    with transaction.atomic():
        if error:
            moved = validation.fail(error, **result)
        else:
            if failed_checks:
                error = f"{len(failed_checks)} integrity check(s) failed: " + "; ".join(
                    failed_checks[:5]
                )
            moved = validation.succeed(passed=not failed_checks, error=error, **result)
        if moved:
            record(
                None,
                "validation.passed" if validation.passed else "validation.failed",
                validation,
                details={
                    "backup": validation.backup_id,
                    "state": validation.state,
                    "error": error,
                    "checks": len(outcome.checks),
                    "failed_checks": failed_checks,
                    "restore_s": outcome.restore_s,
                    "queries_s": outcome.queries_s,
                },
            )


def clean_up_interrupted(validation: Validation) -> None:
    """The kind's clean-up once the reaper interrupted it: drop its scratch database."""
    validation.refresh_from_db()
    if not validation.scratch_database:
        return
    try:
        server_dsn, password = scratch_server(validation.backup.database)
    except Exception as exc:
        logger.warning("scratch database %s left: %s", validation.scratch_database, exc)
        return
    problem = drop_scratch(server_dsn, password, validation.scratch_database)
    record(
        None,
        "validation.scratch_left" if problem else "validation.scratch_dropped",
        validation,
        details={"scratch_database": validation.scratch_database, "error": problem},
    )


VALIDATION = jobs.register(
    jobs.Kind(
        "validation",
        Validation,
        perform,
        stale_after=pipeline.STALE_AFTER_S,
        queued_after=3600,
        heartbeat_every=pipeline.PROGRESS_EVERY_S,
        max_attempts=4,
        retry_backoff=30,
        on_interrupted=clean_up_interrupted,
        describe=lambda validation: f"validation #{validation.pk}",
    )
)
