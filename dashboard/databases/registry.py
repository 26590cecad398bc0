"""Registering and editing managed databases, each change audited in its own transaction.

A password reference is bound to where the database's DSN connects (``ManagedDatabase.binding``).
Who may move a secret: changing the connection (DSN, reference, authentication methods) of a
database that has a reference needs a lead, or an admin for production, and leaves the reference
unbound until someone with that role confirms it. A reference already bound to another server
may be reused only by whoever that server's database would need. ``actor=None`` is the system
(management commands run by an operator): it binds what it registers.

The migration policy (:data:`POLICY_FIELDS`: how guarded execution attempts each revision)
decides how long the application may be held up: on a production database only a lead (or an
admin) may change it; each change is audited with its before and after values.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.db import transaction

from dashboard.accounts.roles import Role, has_role
from dashboard.audit.chain import record
from dashboard.databases.models import ManagedDatabase
from dashboard.lib import pg

AUDITED_FIELDS = (
    "name",
    "environment",
    "dsn",
    "password_ref",
    "require_auth",
    "script_location",
    "critical_tables",
    "partner_id",
    "run_mode",
    "project_python",
    "project_directory",
    "project_url_variable",
    "lock_timeout_ms",
    "lock_attempts",
    "lock_wait_seconds",
    "statement_timeout_seconds",
    "revision_statement_timeouts",
    "snapshot_modes",
    "application_writes",
)
# How guarded execution attempts each revision (dashboard/schema/guard.py).
POLICY_FIELDS = (
    "lock_timeout_ms",
    "lock_attempts",
    "lock_wait_seconds",
    "statement_timeout_seconds",
    "revision_statement_timeouts",
)
# How data loss is looked for (dashboard/schema/snapshot.py): loosening it on production can hide
# a loss, so it takes the policy's role.
DETECTION_FIELDS = ("snapshot_modes", "application_writes")
# What decides where a password goes, and how the server may ask for it.
CONNECTION_FIELDS = ("dsn", "password_ref", "require_auth")
# What decides which program the workers run for the revisions (and gets the URL): the same role.
RUN_FIELDS = ("run_mode", "project_python", "project_directory", "project_url_variable")


class NotAllowed(PermissionError):
    """The actor's role does not allow this change; the message says which role does."""


def _snapshot(db: ManagedDatabase) -> dict[str, Any]:
    # The password reference is a pointer, not a secret, so it may be audited.
    return {name: getattr(db, name) for name in AUDITED_FIELDS}


def connection_role(*databases: ManagedDatabase) -> Role:
    """The role that may change the connection of (or confirm the secret of) these databases:
    admin when any of them is production, else lead."""
    return Role.ADMIN if any(db.is_production for db in databases) else Role.LEAD


def may_change_connection(actor: User | None, db: ManagedDatabase) -> bool:
    """Whether ``actor`` may change ``db``'s connection fields as it is stored now."""
    if actor is None or not db.pk or not db.password_ref:
        return True
    return has_role(actor, connection_role(db))


def policy_role(*databases: ManagedDatabase) -> Role:
    """The role that may change the migration policy: lead when any is production."""
    return Role.LEAD if any(db.is_production for db in databases) else Role.ENGINEER


def may_change_policy(actor: User | None, db: ManagedDatabase) -> bool:
    """Whether ``actor`` may change ``db``'s migration policy (see :data:`POLICY_FIELDS`)."""
    return actor is None or has_role(actor, policy_role(db))


def _policy_refusal(actor: User | None, name: str, moved: list[str], *dbs: ManagedDatabase) -> None:
    needed = policy_role(*dbs)
    if actor is not None and moved and not has_role(actor, needed):
        raise NotAllowed(
            f"Changing the migration policy of {name} ({', '.join(moved)}) needs the "
            f"{needed.label} role: on a production database it decides how long the "
            "application may be held up by a migration."
        )


def _detection_refusal(
    actor: User | None, name: str, moved: list[str], *dbs: ManagedDatabase
) -> None:
    needed = policy_role(*dbs)
    if actor is not None and moved and not has_role(actor, needed):
        raise NotAllowed(
            f"Changing how data loss is detected on {name} ({', '.join(moved)}) needs the "
            f"{needed.label} role: on a production database it decides what a run may lose "
            "unnoticed."
        )


def may_change_run_mode(actor: User | None, db: ManagedDatabase) -> bool:
    """Whether ``actor`` may choose how ``db``'s revisions run (see :data:`RUN_FIELDS`)."""
    return actor is None or has_role(actor, connection_role(db))


def _run_mode_refusal(
    actor: User | None, name: str, moved: list[str], *dbs: ManagedDatabase
) -> None:
    needed = connection_role(*dbs)
    if actor is not None and moved and not has_role(actor, needed):
        raise NotAllowed(
            f"Changing how the revisions of {name} run ({', '.join(moved)}) needs the "
            f"{needed.label} role: it decides which program the workers run with its password."
        )


def _server(dsn: str) -> str:
    try:
        return pg.target(dsn).split("@", 1)[1].rsplit("/", 1)[0]
    except pg.BadDsn:
        return ""


def _reused_elsewhere(db: ManagedDatabase) -> list[ManagedDatabase]:
    """Other databases whose bound reference is this one's, on another server."""
    others = ManagedDatabase.objects.filter(password_ref=db.password_ref).exclude(pk=db.pk)
    return [
        other for other in others if other.secret_bound_to and _server(other.dsn) != _server(db.dsn)
    ]


def _may_bind(actor: User | None, db: ManagedDatabase) -> Role | None:
    """None when ``actor`` may bind ``db``'s reference now, else the role it would need."""
    if actor is None:
        return None
    reused = _reused_elsewhere(db)
    needed = connection_role(db, *reused) if reused else None
    if needed is None or has_role(actor, needed):
        return None
    return needed


@transaction.atomic
def register(actor: User | None, db: ManagedDatabase) -> ManagedDatabase:
    """Register ``db``; its reference is bound at once unless it is already bound to another
    server and ``actor`` lacks the role to reuse it (then a lead or admin confirms it later).
    NotAllowed when it does not run in Runway's environment and ``actor`` is not a lead (admin
    for production)."""
    defaults = ManagedDatabase()
    chosen = [k for k in RUN_FIELDS if getattr(db, k) != getattr(defaults, k)]
    _run_mode_refusal(actor, db.name, chosen, db)
    policy = [k for k in POLICY_FIELDS if getattr(db, k) != getattr(defaults, k)]
    _policy_refusal(actor, db.name, policy, db)
    detection = [k for k in DETECTION_FIELDS if getattr(db, k) != getattr(defaults, k)]
    _detection_refusal(actor, db.name, detection, db)
    if db.password_ref and _may_bind(actor, db) is None:
        db.bind_secret(actor)
    db.save(force_insert=True)
    record(
        actor,
        "database.registered",
        db,
        details=_snapshot(db) | {"secret_bound_to": db.secret_bound_to},
    )
    return db


@transaction.atomic
def update(actor: User | None, db: ManagedDatabase) -> ManagedDatabase:
    """Save an edit of ``db``. NotAllowed when it changes the connection of a database with a
    reference, or how its revisions run, and ``actor`` is not a lead (admin for production,
    before or after the edit); or the migration policy of a production database (before or
    after the edit) and ``actor`` is not a lead."""
    stored = ManagedDatabase.objects.select_for_update().get(pk=db.pk)
    before, after = _snapshot(stored), _snapshot(db)
    changes = {k: [before[k], after[k]] for k in AUDITED_FIELDS if before[k] != after[k]}
    moved = [k for k in CONNECTION_FIELDS if k in changes]
    if actor is not None and stored.password_ref and moved:
        needed = connection_role(stored, db)
        if not has_role(actor, needed):
            raise NotAllowed(
                f"Changing the connection of {stored.name} ({', '.join(moved)}) needs the "
                f"{needed.label} role: it decides where the password is sent."
            )
    _run_mode_refusal(actor, stored.name, [k for k in RUN_FIELDS if k in changes], stored, db)
    _policy_refusal(actor, stored.name, [k for k in POLICY_FIELDS if k in changes], stored, db)
    detection = [k for k in DETECTION_FIELDS if k in changes]
    _detection_refusal(actor, stored.name, detection, stored, db)
    leaves_production = stored.is_production and not db.is_production
    if actor is not None and leaves_production and not has_role(actor, Role.ADMIN):
        raise NotAllowed(f"Taking {stored.name} out of production needs the admin role.")
    unbound = bool(db.password_ref) and db.secret_bound_to != db.binding
    if unbound and (actor is None or (not stored.password_ref and _may_bind(actor, db) is None)):
        db.bind_secret(actor)  # the system, or a first reference: as when registering
        unbound = False
    elif unbound:
        db.secret_bound_to, db.secret_bound_by, db.secret_bound_at = "", None, None
    db.save()
    if changes:
        details: dict[str, Any] = {"changes": changes}
        if unbound and stored.secret_bound_to:
            details["secret_unbound"] = stored.secret_bound_to
        record(actor, "database.updated", db, details=details)
    return db


@transaction.atomic
def confirm_secret(actor: User, db: ManagedDatabase) -> ManagedDatabase:
    """Bind ``db``'s reference to where its DSN connects now (audited). NotAllowed unless the
    actor holds the connection role (and the role to reuse a reference bound elsewhere)."""
    db = ManagedDatabase.objects.select_for_update().get(pk=db.pk)
    if not db.password_ref:
        raise ValueError(f"{db.name} has no password reference to confirm.")
    needed = connection_role(db)
    if not has_role(actor, needed):
        raise NotAllowed(
            f"Confirming where the password of {db.name} goes needs the {needed.label} role."
        )
    reuse = _may_bind(actor, db)
    if reuse is not None:
        raise NotAllowed(
            f"{db.password_ref} is bound to another server's database: reusing it here needs "
            f"the {reuse.label} role."
        )
    db.bind_secret(actor)
    db.save(update_fields=["secret_bound_to", "secret_bound_by", "secret_bound_at"])
    record(actor, "database.secret_confirmed", db, details={"bound_to": db.secret_bound_to})
    return db
