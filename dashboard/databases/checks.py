"""Connection checks: a person (or the schedule) asks, a worker connects, the page shows it."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dashboard.audit.chain import Actor, record
from dashboard.databases import credentials
from dashboard.databases.models import CheckState, ConnectionCheck, ManagedDatabase
from dashboard.lib import alembic, pg
from dashboard.lib.secrets import SecretError


@transaction.atomic
def request_check(actor: Actor | None, db: ManagedDatabase) -> ConnectionCheck:
    from dashboard.databases.tasks import run_connection_check

    check = ConnectionCheck.objects.create(
        database=db, requested_by=actor if actor is not None and actor.pk else None
    )
    record(actor, "database.check_requested", db, details={"check": check.pk})
    run_connection_check.delay_on_commit(check.pk)
    return check


def claim(check_id: int) -> bool:
    """Take a queued check; False when another worker has it or it is done (safe to run twice)."""
    return bool(
        ConnectionCheck.objects.filter(pk=check_id, state=CheckState.QUEUED).update(
            state=CheckState.RUNNING, started_at=timezone.now()
        )
    )


def perform(check_id: int) -> ConnectionCheck | None:
    if not claim(check_id):
        return None
    check = ConnectionCheck.objects.select_related("database").get(pk=check_id)
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
        check.state = CheckState.OK if result.ok else CheckState.FAILED
        check.problem = result.problem
        check.message = result.message or f"Connected to PostgreSQL {result.server_version}."
        check.server_version = result.server_version
        check.current_revisions = result.current_revisions
        check.latency_ms = result.latency_ms
        check.wal = result.wal
        check.table_sizes = {name: list(size) for name, size in result.table_sizes.items()}
        check.finished_at = timezone.now()
        check.save()
        record(
            None,
            "database.checked",
            db,
            details={
                "check": check.pk,
                "state": check.state,
                "problem": check.problem,
                "current": check.current_revisions,
            },
        )
    return check


def request_all(actor: Actor | None = None) -> list[ConnectionCheck]:
    return [request_check(actor, db) for db in ManagedDatabase.objects.all()]


def _not_a_project(db: ManagedDatabase) -> str:
    """Why the script location (a folder or an alembic.ini) is not an Alembic project on this
    host; empty when it is one."""
    try:
        alembic.check_project(db.script_path)
    except alembic.NotAnAlembicProject as exc:
        return str(exc)
    return ""
