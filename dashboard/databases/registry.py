"""Registering and editing managed databases, each change audited in its own transaction."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from dashboard.audit.chain import Actor, record
from dashboard.databases.models import ManagedDatabase

AUDITED_FIELDS = (
    "name",
    "environment",
    "dsn",
    "password_ref",
    "script_location",
    "critical_tables",
    "partner_id",
)


def _snapshot(db: ManagedDatabase) -> dict[str, Any]:
    # The password reference is a pointer, not a secret, so it may be audited.
    return {name: getattr(db, name) for name in AUDITED_FIELDS}


@transaction.atomic
def register(actor: Actor | None, db: ManagedDatabase) -> ManagedDatabase:
    db.save(force_insert=True)
    record(actor, "database.registered", db, details=_snapshot(db))
    return db


@transaction.atomic
def update(actor: Actor | None, db: ManagedDatabase) -> ManagedDatabase:
    before = _snapshot(ManagedDatabase.objects.select_for_update().get(pk=db.pk))
    db.save()
    after = _snapshot(db)
    changes = {k: [before[k], after[k]] for k in AUDITED_FIELDS if before[k] != after[k]}
    if changes:
        record(actor, "database.updated", db, details={"changes": changes})
    return db
