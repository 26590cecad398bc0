"""The demo's cast and databases: made once, found again on later runs."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth.models import User
from django.db import transaction

from dashboard.accounts.roles import Role, grant
from dashboard.audit.chain import record
from dashboard.databases import checks, registry
from dashboard.databases.models import Environment, ManagedDatabase
from dashboard.lib import alembic, pg
from devstack.cluster import Cluster
from devstack.seeding import seed

DEMO_USERS = [("lead", Role.LEAD), ("engineer", Role.ENGINEER), ("viewer", Role.VIEWER)]
CRITICAL_TABLES = ["users", "channels", "scheduled_posts", "subscriptions", "payments"]


@dataclass(frozen=True)
class Target:
    name: str
    dbname: str
    environment: str
    revision: str


TARGETS = [
    Target("analyticbot", "analyticbot", Environment.PRODUCTION, "0016"),
    Target("analyticbot-staging", "analyticbot_staging", Environment.STAGING, "0017"),
]


def create_users() -> dict[str, str]:
    """Create the demo users that do not exist; return the new ones' passwords."""
    created = {}
    for username, role in DEMO_USERS:
        if User.objects.filter(username=username).exists():
            continue
        password = secrets.token_urlsafe(9)
        with transaction.atomic():
            user = User.objects.create_user(username, f"{username}@runway.example", password)
            grant(user, role)
            record(None, "user.created", user, details={"role": role.label, "by": "setup_demo"})
        created[username] = password
    return created


def prepare_target(
    target: Target, *, cluster: Cluster, user: str, password: str, users: int
) -> bool:
    """Create, migrate and seed a target database unless it exists; True when it was made."""
    if not cluster.create_database(target.dbname, owner=user):
        return False
    dsn = f"host={cluster.host} port={cluster.port} dbname={target.dbname} user={user}"
    alembic.upgrade(_script_location(), pg.sqlalchemy_url(dsn, password), target.revision)
    with pg.connect(dsn, password, autocommit=False) as conn:
        seed(conn, users=users)
        conn.commit()
    return True


def _script_location() -> Path:
    from django.conf import settings

    return Path(settings.BASE_DIR) / "migrations_target"


def register_target(
    target: Target, *, host: str, port: int, user: str, password_file: Path
) -> ManagedDatabase:
    """Register the target, or bring its connection settings up to date (the port may move)."""
    dsn = f"host={host} port={port} dbname={target.dbname} user={user}"
    fields = dict(
        environment=target.environment,
        dsn=dsn,
        password_ref=f"file:{password_file}",
        script_location="migrations_target",
        critical_tables=CRITICAL_TABLES,
    )
    db = ManagedDatabase.objects.filter(name=target.name).first()
    if db is None:
        return registry.register(None, ManagedDatabase(name=target.name, **fields))
    for key, value in fields.items():
        setattr(db, key, value)
    return registry.update(None, db)


def request_checks() -> None:
    checks.request_all()
