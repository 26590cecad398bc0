"""The demo's cast and databases: made once, found again on later runs.

Three targets: the production database the demo's application (devstack.load) plays against, a
staging one, and a sandbox at 0020 whose scripts (a copy of migrations_target, generated under
the demo's home) hold one more revision, 0021, a "cleanup" that deletes the inactive users and
their rows without declaring it: deploying it shows the integrity step naming the lost rows, the
"Any data loss" trigger firing and the rollback restoring the backup on its own.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from dashboard.accounts.roles import Role, grant
from dashboard.audit.chain import record
from dashboard.databases import checks, registry
from dashboard.databases.models import Environment, ManagedDatabase
from dashboard.lib import alembic, pg
from dashboard.triggers.models import Signal
from dashboard.triggers.rules import rules_of
from devstack.cluster import Cluster
from devstack.load import AUTH_FAILURE_SQL
from devstack.seeding import seed

DEMO_USERS = [
    ("lead", Role.LEAD),
    ("lead2", Role.LEAD),  # a second pair of eyes, for the two-lead approval policy
    ("engineer", Role.ENGINEER),
    ("viewer", Role.VIEWER),
]
CRITICAL_TABLES = ["users", "channels", "scheduled_posts", "subscriptions", "payments"]
# The columns devstack.load updates (its plan change and its channel rename): its own traffic
# during a run is no loss.
APPLICATION_WRITES = ["users.plan_id", "users.is_active", "channels.title"]
LOAD_TARGET = "analyticbot"  # the database the demo's application plays against
SANDBOX = "analyticbot-sandbox"
SANDBOX_REVISION = "0021"


@dataclass(frozen=True)
class Target:
    name: str
    dbname: str
    environment: str
    revision: str


TARGETS = [
    Target("analyticbot", "analyticbot", Environment.PRODUCTION, "0016"),
    Target("analyticbot-staging", "analyticbot_staging", Environment.STAGING, "0017"),
    # Its scripts are migrations_target and 0021 (sandbox_scripts): 0021 is pending.
    Target(SANDBOX, "analyticbot_sandbox", Environment.STAGING, "0020"),
]

CLEANUP_REVISION = f'''"""cleanup: delete inactive users and everything they own

Revision ID: {SANDBOX_REVISION}
Revises: 0020
Create Date: 2025-10-02 16:40:11.502114+00:00

The demo's lossy revision (devstack/demo.py writes it into the sandbox's scripts only). It
deletes rows and declares nothing ("# runway: expect delete users" would), so the integrity step
names the lost rows and the "Any data loss" trigger rolls the run back. Since 0016 every foreign
key to user data is RESTRICT: the children go first.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "{SANDBOX_REVISION}"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INACTIVE = "SELECT id FROM users WHERE NOT is_active"


def upgrade() -> None:
    op.execute(
        "DELETE FROM sent_posts WHERE scheduled_post_id IN (SELECT p.id FROM scheduled_posts p "
        f"JOIN channels c ON c.id = p.channel_id WHERE c.user_id IN ({{INACTIVE}}))"
    )
    op.execute(
        "DELETE FROM scheduled_posts WHERE channel_id IN "
        f"(SELECT id FROM channels WHERE user_id IN ({{INACTIVE}}))"
    )
    op.execute(f"DELETE FROM channels WHERE user_id IN ({{INACTIVE}})")
    op.execute(
        f"DELETE FROM payments WHERE user_id IN ({{INACTIVE}}) "
        f"OR subscription_id IN (SELECT id FROM subscriptions WHERE user_id IN ({{INACTIVE}})) "
        f"OR payment_method_id IN (SELECT id FROM payment_methods WHERE user_id IN ({{INACTIVE}}))"
    )
    op.execute(f"DELETE FROM subscriptions WHERE user_id IN ({{INACTIVE}})")
    op.execute(f"DELETE FROM payment_methods WHERE user_id IN ({{INACTIVE}})")
    op.execute("DELETE FROM users WHERE NOT is_active")


def downgrade() -> None:
    raise NotImplementedError("the deleted users and their rows are gone: restore a backup")
'''


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


def sandbox_scripts(folder: Path) -> bool:
    """Write the sandbox's Alembic project into ``folder``: migrations_target's files and the
    lossy revision 0021. Only what differs is written (a revision gone from migrations_target
    goes here too); True when anything changed."""
    source = _script_location()
    wanted = {name: (source / name).read_text() for name in ("alembic.ini", "env.py")}
    for path in sorted((source / "versions").glob("*.py")):
        wanted[f"versions/{path.name}"] = path.read_text()
    wanted[f"versions/{SANDBOX_REVISION}_cleanup_inactive_users.py"] = CLEANUP_REVISION
    mako = source / "script.py.mako"
    if mako.exists():
        wanted["script.py.mako"] = mako.read_text()
    changed = False
    (folder / "versions").mkdir(parents=True, exist_ok=True)
    for stale in (folder / "versions").glob("*.py"):
        if f"versions/{stale.name}" not in wanted:
            stale.unlink()
            changed = True
    for name, text in wanted.items():
        path = folder / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed = True
    return changed


def prepare_target(
    target: Target,
    *,
    cluster: Cluster,
    user: str,
    password: str,
    users: int,
    scripts: Path | None = None,
) -> bool:
    """Create, migrate and seed a target database unless it exists; True when it was made."""
    if not cluster.create_database(target.dbname, owner=user):
        return False
    dsn = f"host={cluster.host} port={cluster.port} dbname={target.dbname} user={user}"
    location = scripts or _script_location()
    alembic.upgrade(location, pg.sqlalchemy_url(dsn, password), target.revision)
    with pg.connect(dsn, password, autocommit=False) as conn:
        seed(conn, users=users)
        conn.commit()
    return True


def _script_location() -> Path:
    from django.conf import settings

    return Path(settings.BASE_DIR) / "migrations_target"


def register_target(
    target: Target,
    *,
    host: str,
    port: int,
    user: str,
    password_file: Path,
    scripts: Path | None = None,
) -> ManagedDatabase:
    """Register the target, or bring its connection settings up to date (the port may move)."""
    dsn = f"host={host} port={port} dbname={target.dbname} user={user}"
    fields = dict(
        environment=target.environment,
        dsn=dsn,
        password_ref=f"file:{password_file}",
        script_location=str(scripts) if scripts is not None else "migrations_target",
        critical_tables=CRITICAL_TABLES,
        application_writes=APPLICATION_WRITES,
    )
    db = ManagedDatabase.objects.filter(name=target.name).first()
    if db is None:
        return registry.register(None, ManagedDatabase(name=target.name, **fields))
    for key, value in fields.items():
        setattr(db, key, value)
    return registry.update(None, db)


def configure_triggers(db: ManagedDatabase, load_port: int) -> list[str]:
    """On the database the demo's application plays against, its health URL and the share of
    its failed log-ins (the auth_attempts table) as the health and custom SQL rules, enabled;
    what was set (empty: already there). A rule a person has changed is left as they made it.
    The other targets keep the seed's defaults (made now): that application's health is not
    theirs."""
    rules = rules_of(db)
    if db.name != LOAD_TARGET:
        return []
    wanted = {
        Signal.HEALTH: {"url": f"http://127.0.0.1:{load_port}/health"},
        Signal.CUSTOM_SQL: {"query": AUTH_FAILURE_SQL},
    }
    done = []
    for rule in rules:
        config = wanted.get(Signal(rule.signal))
        if config is None or rule.changed_by_id is not None:
            continue
        if rule.enabled and rule.config == config:
            continue
        with transaction.atomic():
            changes = {"enabled": [rule.enabled, True], "config": [rule.config, config]}
            rule.enabled, rule.config, rule.changed_at = True, config, timezone.now()
            rule.save(update_fields=["enabled", "config", "changed_at"])
            record(
                None,
                "trigger.rule_changed",
                db,
                details={
                    "rule": rule.pk,
                    "signal": rule.signal,
                    "changes": changes,
                    "by": "setup_demo",
                },
            )
        done.append(rule.name)
    return done


def request_checks() -> None:
    checks.request_all()
