"""Connection checks: a person (or the schedule) asks, a worker connects, the page shows it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from dashboard.audit.chain import record
from dashboard.databases import credentials
from dashboard.databases.models import ConnectionCheck, ManagedDatabase
from dashboard.jobs import lifecycle as jobs
from dashboard.lib import alembic, pg
from dashboard.lib.secrets import SecretError

log = logging.getLogger(__name__)

# What other apps do on the worker after a check that connected, registered in their
# AppConfig.ready(): the schema app analyses the pending revisions it found, so the first person
# to open the history page reads stored grades instead of waiting for every revision to render.
# The check is recorded before they run; one that raises is logged and changes nothing of it.
AFTER_CONNECTED: list[Callable[[ConnectionCheck], None]] = []


@transaction.atomic
def request_check(actor: User | None, db: ManagedDatabase) -> ConnectionCheck:
    check = ConnectionCheck.objects.create(
        database=db, requested_by=actor if actor is not None and actor.pk else None
    )
    record(actor, "database.check_requested", db, details={"check": check.pk})
    jobs.enqueue(check)
    return check


def perform(check: ConnectionCheck, context: jobs.Context) -> None:
    """The job's work: connect, read what the pages need, record it (audited)."""
    db = check.database
    try:
        password = credentials.password(db)
    except SecretError as exc:
        result = pg.Probe(False, "secret", f"{pg.PROBLEM_MESSAGES['secret']}: {exc}")
    else:
        result = pg.probe(db.dsn, password, timeout=settings.RUNWAY_CONNECT_TIMEOUT)
        refusal = _not_a_project(db) if result.ok else ""
        if refusal:
            result.ok, result.problem = False, "not_alembic_project"
            result.message = f"Connected, but on the worker {refusal}."
    with transaction.atomic():
        check.succeed(
            problem=result.problem if not result.ok else "",
            message=result.message or f"Connected to PostgreSQL {result.server_version}.",
            server_version=result.server_version,
            current_revisions=result.current_revisions,
            latency_ms=result.latency_ms,
            wal=result.wal,
            table_sizes={name: list(size) for name, size in result.table_sizes.items()},
        )
        record(
            None,
            "database.checked",
            db,
            details={
                "check": check.pk,
                "state": check.outcome,
                "problem": check.problem,
                "current": check.current_revisions,
            },
        )
    if check.connected:
        for hook in AFTER_CONNECTED:
            try:
                hook(check)
            except Exception:
                log.exception("after the check of %s: %s failed", db.name, hook.__qualname__)


jobs.register(
    jobs.Kind(
        "connection_check",
        ConnectionCheck,
        perform,
        # A check is a connection and a few catalog reads: a minute without a beat is a
        # dead worker; one nobody took for ten minutes will not be wanted any more.
        stale_after=60,
        queued_after=600,
        max_attempts=1,
    )
)


def request_all(actor: User | None = None) -> list[ConnectionCheck]:
    return [request_check(actor, db) for db in ManagedDatabase.objects.all()]


def _not_a_project(db: ManagedDatabase) -> str:
    """Why the script location (a folder or an alembic.ini) is not an Alembic project on this
    host; empty when it is one."""
    try:
        alembic.check_project(db.script_path)
    except alembic.NotAnAlembicProject as exc:
        return str(exc)
    return ""
