"""How long the application stalls while each migration pattern runs: naive ``alembic upgrade``
against Runway's guarded execution and against Runway running the pattern's safe form.

    .venv/bin/python bench/stalls.py [--users 2000000] [--clients 8] [--patterns a,b]
                                     [--modes naive,guarded,safe] [--reader-seconds 20]

On a private PostgreSQL cluster: the seed schema (``migrations_target`` at 0016, the revision
seeding needs) seeded with ``--users`` users (timed), and the demo's application
(:mod:`devstack.load`, ``--clients`` client threads) playing against it while each pattern is
applied. For every pattern, three runs, alternated (a, b, c for the first pattern, then the next):

(a) naive: Alembic's own ``upgrade`` of a generated project whose env.py sets the seed's
    timeouts (lock_timeout 3 min, statement_timeout 5 min), one transaction per revision;
(b) guarded: ``dashboard.schema.execution.migrate`` of the same revision on a ManagedDatabase,
    with the database's execution policy;
(c) safe: the same, running the pattern's safe form (CONCURRENTLY; expand, batched backfill,
    swap; NOT VALID then VALIDATE; CHECK NOT VALID + VALIDATE then SET NOT NULL; nullable
    column, default, batched backfill; the instant forms as they are).

Each migration runs in a child process that has done its imports (and Django's set-up) before
the measured window opens, so the window holds the migration and nothing of Python's start.
The window opens ``--warmup`` seconds after the load started and closes ``--tail`` seconds after
the migration ended; the load's figures are for that window: the longest stall (no transaction
completing) and the stalled time (the sum of gaps longer than devstack.load.STALL_THRESHOLD,
100 ms). Between runs the load stops and the schema is put back (the pattern's own undo
statements, the version table back at 0016, VACUUM ANALYZE of the table). Nothing is cached
between runs of the bench unless ``--cluster DIR`` is given: then the seeded cluster is kept in
DIR and a later run with the same ``--users`` reuses it (said so in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from devstack.cluster import Cluster, start_cluster  # noqa: E402
from devstack.load import STALL_THRESHOLD, Load  # noqa: E402

APP_ROLE = "app_owner"
DBNAME = "app"
PASSWORD_ENV = "RUNWAY_DB_BENCH_STALLS"
BASE_REVISION = "0016"
# The seed audit's "Migration Timeout Protection" (its env.py), in milliseconds.
SEED_LOCK_TIMEOUT_MS = 180000
SEED_STATEMENT_TIMEOUT_MS = 300000
DEFAULT_LOCK_TIMEOUT = 0.5  # the target's bound when the policy does not say its own
MODES = ("naive", "guarded", "safe")
MODE_TITLES = {
    "naive": "(a) naive alembic upgrade",
    "guarded": "(b) Runway guarded",
    "safe": "(c) Runway, safe form",
}

ENV_PY = f'''"""The bench project's env.py: the seed audit's timeouts on the connection."""

import os

from alembic import context
from sqlalchemy import create_engine, pool

engine = create_engine(
    os.environ["BENCH_DATABASE_URL"],
    poolclass=pool.NullPool,
    connect_args={{
        "options": "-c lock_timeout={SEED_LOCK_TIMEOUT_MS} "
        "-c statement_timeout={SEED_STATEMENT_TIMEOUT_MS}"
    }},
)
with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
'''

ALEMBIC_INI = """[alembic]
script_location = %(here)s
"""

REVISION = '''"""{title}: {step}

Revision ID: {rev}
Revises: {down}
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None

BATCH = {batch}


def upgrade() -> None:
{body}


def downgrade() -> None:
    raise NotImplementedError("the bench puts the schema back itself")
'''


def code(text: str) -> str:
    """A revision's upgrade() body from an indented block of source."""
    return textwrap.indent(textwrap.dedent(text).strip(), "    ")


def backfill(table: str, assignment: str, where: str) -> str:
    """``UPDATE table SET assignment`` in batches of ids, each its own transaction (an
    autocommit block), as the seed's large data migration pattern does."""
    return code(
        f"""
        bind = op.get_bind()
        with op.get_context().autocommit_block():
            top = bind.execute(sa.text("SELECT coalesce(max(id), 0) FROM {table}")).scalar_one()
            for low in range(0, top + 1, BATCH):
                op.execute(
                    f"UPDATE {table} SET {assignment} "
                    f"WHERE id >= {{low}} AND id < {{low + BATCH}} AND {where}"
                )
        """
    )


@dataclass(frozen=True)
class Pattern:
    name: str
    title: str
    tables: tuple[str, ...]
    naive: str  # the body of the one revision's upgrade()
    safe: tuple[tuple[str, str], ...]  # (step, body) of each revision of the safe form
    reset: tuple[str, ...]  # after every run, the load stopped
    prepare: tuple[str, ...] = ()  # before the pattern's first run
    finish: tuple[str, ...] = ()  # after its last
    reader: bool = False  # an open transaction holds ACCESS SHARE on the table meanwhile


INDEX = 'op.create_index("ix_payments_status_created_at", "payments", ["status", "created_at"]'
ADD_FK = (
    "ALTER TABLE payments ADD CONSTRAINT fk_payments_user_id_users "
    "FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE RESTRICT"
)
PATTERNS = (
    Pattern(
        "index",
        "index on payments",
        ("payments",),
        code(INDEX + ")"),
        (
            (
                "CREATE INDEX CONCURRENTLY",
                code(
                    f"""
                    with op.get_context().autocommit_block():
                        {INDEX}, postgresql_concurrently=True)
                    """
                ),
            ),
        ),
        ("DROP INDEX IF EXISTS ix_payments_status_created_at",),
    ),
    Pattern(
        "type_change",
        "payments.amount to numeric(12,4)",
        ("payments",),
        code(
            """
            op.alter_column(
                "payments", "amount", type_=sa.Numeric(12, 4),
                existing_type=sa.Numeric(10, 2), existing_nullable=False,
            )
            """
        ),
        (
            (
                "a new column, kept in step by a trigger",
                code(
                    """
                    op.add_column("payments", sa.Column("amount_new", sa.Numeric(12, 4)))
                    op.execute(
                        "CREATE FUNCTION payments_amount_new() RETURNS trigger LANGUAGE plpgsql "
                        "AS $$ BEGIN NEW.amount_new := NEW.amount; RETURN NEW; END $$"
                    )
                    op.execute(
                        "CREATE TRIGGER payments_amount_new BEFORE INSERT OR UPDATE OF amount "
                        "ON payments FOR EACH ROW EXECUTE FUNCTION payments_amount_new()"
                    )
                    """
                ),
            ),
            (
                "backfill in batches",
                backfill("payments", "amount_new = amount", "amount_new IS NULL"),
            ),
            (
                "CHECKs NOT VALID",
                code(
                    """
                    op.execute(
                        "ALTER TABLE payments ADD CONSTRAINT ck_payments_amount_new_not_null "
                        "CHECK (amount_new IS NOT NULL) NOT VALID, "
                        "ADD CONSTRAINT ck_payments_amount_new_non_negative "
                        "CHECK (amount_new >= 0) NOT VALID"
                    )
                    """
                ),
            ),
            (
                "VALIDATE",
                code(
                    """
                    for name in ("not_null", "non_negative"):
                        op.execute(
                            "ALTER TABLE payments VALIDATE CONSTRAINT "
                            f"ck_payments_amount_new_{name}"
                        )
                    """
                ),
            ),
            (
                "swap (SET NOT NULL proved by the CHECK)",
                code(
                    """
                    op.execute("ALTER TABLE payments ALTER COLUMN amount_new SET NOT NULL")
                    op.execute("DROP TRIGGER payments_amount_new ON payments")
                    op.execute("DROP FUNCTION payments_amount_new()")
                    op.drop_column("payments", "amount")
                    op.alter_column("payments", "amount_new", new_column_name="amount")
                    op.drop_constraint("ck_payments_amount_new_not_null", "payments")
                    op.execute(
                        "ALTER TABLE payments RENAME CONSTRAINT "
                        "ck_payments_amount_new_non_negative TO ck_payments_amount_non_negative"
                    )
                    """
                ),
            ),
        ),
        (
            "DROP TRIGGER IF EXISTS payments_amount_new ON payments",
            "DROP FUNCTION IF EXISTS payments_amount_new()",
            "ALTER TABLE payments DROP COLUMN IF EXISTS amount_new",
            "ALTER TABLE payments ALTER COLUMN amount TYPE numeric(10,2)",
        ),
    ),
    Pattern(
        "foreign_key",
        "FK payments.user_id -> users",
        ("payments", "users"),
        code(
            """
            op.create_foreign_key(
                "fk_payments_user_id_users", "payments", "users", ["user_id"], ["id"],
                ondelete="RESTRICT",
            )
            """
        ),
        (
            ("NOT VALID", code(f'op.execute("{ADD_FK} NOT VALID")')),
            (
                "VALIDATE",
                code(
                    """
                    op.execute("ALTER TABLE payments VALIDATE CONSTRAINT fk_payments_user_id_users")
                    """
                ),
            ),
        ),
        ("ALTER TABLE payments DROP CONSTRAINT IF EXISTS fk_payments_user_id_users",),
        # The seed schema has this key: it is dropped for the pattern to add it, then put back.
        prepare=("ALTER TABLE payments DROP CONSTRAINT IF EXISTS fk_payments_user_id_users",),
        finish=(ADD_FK,),
    ),
    Pattern(
        "set_not_null",
        "users.plan_id SET NOT NULL",
        ("users",),
        code('op.alter_column("users", "plan_id", existing_type=sa.Integer(), nullable=False)'),
        (
            (
                "CHECK NOT VALID",
                code(
                    """
                    op.execute(
                        "ALTER TABLE users ADD CONSTRAINT ck_users_plan_id_not_null "
                        "CHECK (plan_id IS NOT NULL) NOT VALID"
                    )
                    """
                ),
            ),
            (
                "VALIDATE",
                code(
                    'op.execute("ALTER TABLE users VALIDATE CONSTRAINT ck_users_plan_id_not_null")'
                ),
            ),
            (
                "SET NOT NULL (proved by the CHECK)",
                code(
                    """
                    op.alter_column("users", "plan_id", existing_type=sa.Integer(), nullable=False)
                    op.drop_constraint("ck_users_plan_id_not_null", "users")
                    """
                ),
            ),
        ),
        (
            "ALTER TABLE users ALTER COLUMN plan_id DROP NOT NULL",
            "ALTER TABLE users DROP CONSTRAINT IF EXISTS ck_users_plan_id_not_null",
        ),
    ),
    Pattern(
        "volatile_default",
        "users.api_key DEFAULT gen_random_uuid()",
        ("users",),
        code(
            """
            op.add_column(
                "users",
                sa.Column(
                    "api_key", postgresql.UUID(), server_default=sa.text("gen_random_uuid()")
                ),
            )
            """
        ),
        (
            (
                "a nullable column, then its default",
                code(
                    """
                    op.add_column("users", sa.Column("api_key", postgresql.UUID()))
                    op.alter_column("users", "api_key", server_default=sa.text("gen_random_uuid()"))
                    """
                ),
            ),
            (
                "backfill in batches",
                backfill("users", "api_key = gen_random_uuid()", "api_key IS NULL"),
            ),
        ),
        ("ALTER TABLE users DROP COLUMN IF EXISTS api_key",),
    ),
    Pattern(
        "constant_default",
        "users.notify boolean DEFAULT true",
        ("users",),
        code(
            """
            op.add_column(
                "users", sa.Column("notify", sa.Boolean(), server_default=sa.true(), nullable=False)
            )
            """
        ),
        (),  # the revision as written is the safe form (instant since PostgreSQL 11)
        ("ALTER TABLE users DROP COLUMN IF EXISTS notify",),
    ),
    Pattern(
        "instant_ddl_behind_reader",
        "ADD COLUMN behind a {reader}-s reader",
        ("payments",),
        code('op.add_column("payments", sa.Column("note", sa.Text()))'),
        (),  # instant as written: only how it waits matters
        ("ALTER TABLE payments DROP COLUMN IF EXISTS note",),
        reader=True,
    ),
)
BY_NAME = {p.name: p for p in PATTERNS}


# --- The project, the cluster, Django ---


def write_project(folder: Path, pattern: Pattern, form: str, batch: int) -> list[str]:
    """An Alembic project: the seed's own revisions up to 0016, then the pattern's (its naive
    revision, or its safe form's). Returns the revisions to run, oldest first."""
    versions = folder / "versions"
    versions.mkdir(parents=True)
    for source in sorted((ROOT / "migrations_target" / "versions").glob("00*.py")):
        if source.name[:4] <= BASE_REVISION:
            shutil.copy(source, versions / source.name)
    (folder / "env.py").write_text(ENV_PY)
    (folder / "alembic.ini").write_text(ALEMBIC_INI)
    steps = [("as written", pattern.naive)]
    if form == "safe" and pattern.safe:
        steps = list(pattern.safe)
    down, revisions = BASE_REVISION, []
    for index, (step, body) in enumerate(steps, 1):
        rev = f"{pattern.name[:24]}_{form[0]}{index}"  # alembic_version holds 32 characters
        (versions / f"{rev}.py").write_text(
            REVISION.format(
                title=pattern.title, step=step, rev=rev, down=down, batch=batch, body=body
            )
        )
        revisions.append(rev)
        down = rev
    return revisions


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    cluster: Cluster | None = None
    app_password: str = ""
    projects: dict[tuple[str, str], tuple[Path, list[str]]] = field(default_factory=dict)
    results: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    lock_timeout: float | None = None
    guarded_by: str = ""
    seed_error: str = ""

    @property
    def app_dsn(self) -> str:
        assert self.cluster is not None
        return f"host={self.cluster.host} port={self.cluster.port} dbname={DBNAME} user={APP_ROLE}"

    def admin(self) -> psycopg.Connection:
        assert self.cluster is not None
        return psycopg.connect(self.cluster.dsn(DBNAME), autocommit=True)

    def env(self) -> dict[str, str]:
        assert self.cluster is not None
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DATABASE_URL": self.cluster.url("runway"),
            "RUNWAY_LOG_LEVEL": "WARNING",
            "RUNWAY_SECRET_KEY": os.environ.get("RUNWAY_SECRET_KEY") or secrets.token_urlsafe(50),
            PASSWORD_ENV: self.app_password,
            "BENCH_DATABASE_URL": self.cluster.url(DBNAME, APP_ROLE, self.app_password),
        }


def prepare_cluster(bench: Bench) -> None:
    """The cluster, the seeded application database and Runway's own database."""
    args = bench.args
    root = args.cluster.resolve() if args.cluster else bench.work / "pg"
    started = time.monotonic()
    bench.cluster = cluster = start_cluster(root)
    pwfile = root / "app-password"
    if not pwfile.exists():
        pwfile.write_text(secrets.token_urlsafe(18))
    bench.app_password = pwfile.read_text().strip()
    cluster.create_role(APP_ROLE, bench.app_password)
    cluster.execute(f"GRANT pg_read_all_stats TO {APP_ROLE}")
    say(f"cluster in {root} started in {time.monotonic() - started:.1f} s")
    marker = root / "seeded-users"
    if args.cluster and marker.exists() and marker.read_text().strip() == str(args.users):
        say(f"reusing the database seeded with {args.users:,} users in {root} (--cluster)")
        migrate_runway(bench)
        for pattern in PATTERNS:  # undo what an interrupted run may have left
            reset(bench, pattern, vacuum=False)
            run_sql(bench, pattern.finish)
    else:
        marker.unlink(missing_ok=True)
        seeding = threading.Thread(target=seed_app, args=(bench,))
        seeding.start()
        migrate_runway(bench)  # meanwhile: the seeding is the server's work
        seeding.join()
        if bench.seed_error:
            raise SystemExit(f"seeding failed: {bench.seed_error}")
        if args.cluster:
            marker.write_text(str(args.users))
    with bench.admin() as conn:
        sizes = conn.execute(
            "SELECT relname, reltuples::bigint, pg_total_relation_size(oid) FROM pg_class "
            "WHERE relname IN ('users', 'channels', 'payments') ORDER BY relname"
        ).fetchall()
        total = conn.execute(f"SELECT pg_database_size('{DBNAME}')").fetchone()
    assert total is not None
    say(
        "database: "
        + ", ".join(f"{name} {rows:,} rows ({size / 2**20:.0f} MB)" for name, rows, size in sizes)
        + f"; {total[0] / 2**30:.2f} GB in all"
    )


def seed_app(bench: Bench) -> None:
    from devstack.seeding import seed

    assert bench.cluster is not None
    try:
        bench.cluster.create_database(DBNAME, owner=APP_ROLE, replace=True)
        started = time.monotonic()
        subprocess.run(
            [
                str(Path(sys.executable).parent / "alembic"),
                "-c",
                str(ROOT / "migrations_target" / "alembic.ini"),
                "-x",
                f"url={bench.cluster.url(DBNAME, APP_ROLE, bench.app_password)}",
                "upgrade",
                BASE_REVISION,
            ],
            check=True,
            capture_output=True,
        )
        migrated = time.monotonic() - started
        started = time.monotonic()
        with psycopg.connect(bench.app_dsn, password=bench.app_password) as conn:
            counts = seed(conn, users=bench.args.users)
        seeded = time.monotonic() - started
        say(
            f"seed schema: alembic upgrade {BASE_REVISION} in {migrated:.1f} s; seeded "
            f"{bench.args.users:,} users in {seeded:.1f} s ({seeded / 60:.1f} min; "
            f"{sum(counts.values()):,} rows)"
        )
    except Exception as exc:  # reported by the main thread
        bench.seed_error = f"{type(exc).__name__}: {exc}"


def migrate_runway(bench: Bench) -> None:
    """Runway's own database, with one ManagedDatabase per generated project."""
    assert bench.cluster is not None
    started = time.monotonic()
    bench.cluster.create_database("runway")
    os.environ.update(bench.env())
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    say(f"Runway's database migrated in {time.monotonic() - started:.1f} s")


def register(bench: Bench) -> None:
    """Generate each pattern's two projects and register each as a managed database."""
    from dashboard.databases.models import ManagedDatabase

    for pattern in selected(bench.args):
        for form in ("naive", "safe"):
            folder = bench.work / "projects" / f"{pattern.name}-{form}"
            revisions = write_project(folder, pattern, form, bench.args.batch)
            bench.projects[(pattern.name, form)] = (folder, revisions)
            name = db_name(pattern, form)
            ManagedDatabase.objects.filter(name=name).delete()
            db = ManagedDatabase(
                name=name,
                environment="production",
                dsn=bench.app_dsn,
                password_ref=f"env:{PASSWORD_ENV}",
                script_location=str(folder),
                critical_tables=["users", "payments"],
            )
            db.bind_secret(None)
            db.save(force_insert=True)


def db_name(pattern: Pattern, form: str) -> str:
    return f"bench-{pattern.name}-{form}".replace("_", "-")


def selected(args: argparse.Namespace) -> list[Pattern]:
    return [BY_NAME[name] for name in args.patterns]


# --- One run ---


class Child:
    """A migration in its own process, imports done, waiting for "go" on its stdin."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            _, err = self.proc.communicate(timeout=30)
            raise RuntimeError(f"the migration process did not start: {line}{err[-3000:]}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=SEED_STATEMENT_TIMEOUT_MS / 1000 * 10)
        lines = out.strip().splitlines()
        try:
            return dict(json.loads(lines[-1]))
        except (IndexError, ValueError):
            return {"ok": False, "error": (err.strip().splitlines() or ["no output"])[-1]}


@contextmanager
def reader(dsn: str, password: str, table: str, seconds: float) -> Iterator[None]:
    """Another session: an open transaction that read ``table`` (so holds ACCESS SHARE on it)
    for ``seconds``; yields once it holds the lock, returns when it has ended."""
    holding = threading.Event()

    def hold() -> None:
        with psycopg.connect(dsn, password=password, application_name="bench-reader") as conn:
            conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT 1000) AS sample")
            holding.set()
            time.sleep(seconds)
            conn.rollback()

    thread = threading.Thread(target=hold, name="bench-reader")
    thread.start()
    if not holding.wait(30):
        raise RuntimeError("the reader session did not start")
    try:
        yield
    finally:
        thread.join()


def run_once(bench: Bench, pattern: Pattern, mode: str) -> dict[str, Any]:
    args = bench.args
    form = "naive" if mode in ("naive", "guarded") else "safe"
    folder, revisions = bench.projects[(pattern.name, form)]
    env = bench.env()
    if mode == "naive":
        argv = ["--child-alembic", str(folder / "alembic.ini"), revisions[-1]]
    else:
        argv = ["--child-runway", db_name(pattern, form), *revisions]
    load = Load(bench.app_dsn, args.clients, password=bench.app_password).start()
    try:
        started = time.monotonic()
        child = Child(argv, env)
        time.sleep(max(0.0, args.warmup - (time.monotonic() - started)))
        t0 = load.clock()
        if pattern.reader:
            with reader(bench.app_dsn, bench.app_password, pattern.tables[0], args.reader_seconds):
                time.sleep(0.5)
                child.go()
                outcome = child.result()
        else:
            child.go()
            outcome = child.result()
        migrated = load.clock() - t0
        time.sleep(args.tail)
        stats = load.stats(since=t0, until=load.clock())
    finally:
        load.stop()
    with bench.admin() as conn:
        at = conn.execute("SELECT string_agg(version_num, ',') FROM alembic_version").fetchone()
    applied = bool(at and at[0] == revisions[-1])
    window = stats["window"]
    return {
        "ok": bool(outcome.get("ok")) and applied,
        "error": outcome.get("error", "" if applied else f"alembic_version is {at and at[0]}"),
        "seconds": outcome.get("seconds", migrated),  # the child's own, from "go" to done
        "longest": window["longest_stall_seconds"],
        "stalled": window["stalled_seconds"],
        "tps": window["per_second"],
        "p99": window["p99_ms"],
        "errors": window["errors"],
        "load_error": stats["last_error"] if window["errors"] else "",
        "child": outcome,
    }


def run_sql(bench: Bench, statements: tuple[str, ...]) -> None:
    with bench.admin() as conn:
        for statement in statements:
            conn.execute(statement)


def reset(bench: Bench, pattern: Pattern, *, vacuum: bool = True) -> None:
    with bench.admin() as conn:
        for statement in pattern.reset:
            conn.execute(statement)
        conn.execute("UPDATE alembic_version SET version_num = %s", (BASE_REVISION,))
        if vacuum:
            conn.execute(f"VACUUM (ANALYZE) {', '.join(pattern.tables)}")


def baseline(bench: Bench) -> dict[str, Any]:
    """The load alone, for as long as a short run: the noise floor."""
    load = Load(bench.app_dsn, bench.args.clients, password=bench.app_password).start()
    try:
        time.sleep(bench.args.warmup)
        t0 = load.clock()
        time.sleep(5)
        stats = load.stats(since=t0)
    finally:
        load.stop()
    window = stats["window"]
    return {
        "longest": window["longest_stall_seconds"],
        "stalled": window["stalled_seconds"],
        "tps": window["per_second"],
        "p50": window["p50_ms"],
        "p99": window["p99_ms"],
        "errors": window["errors"],
    }


# --- The children ---


def child_alembic(ini: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(ini)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    try:
        command.upgrade(config, revision)
    except Exception as exc:
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {_first(exc)}"}))
        return
    print(json.dumps({"ok": True, "seconds": time.monotonic() - started}))


def child_runway(name: str, revisions: list[str]) -> None:
    import django

    django.setup()
    from dashboard.databases.models import ManagedDatabase
    from dashboard.schema import execution
    from dashboard.schema.status import scripts_of

    db = ManagedDatabase.objects.get(name=name)
    scripts_of(db)  # read the scripts (and import what running them imports) before "go"
    from dashboard.lib.alembic import online  # noqa: F401

    kwargs: dict[str, Any] = {}
    described: dict[str, Any] = {"guarded_by": "execution.migrate (no guard in this tree)"}
    try:
        from dashboard.schema import guard
    except ImportError:
        pass
    else:
        policy = guard.Policy.of(db)
        kwargs["policy"] = policy
        described = {
            "guarded_by": f"execution.migrate(policy=guard.Policy.of(db)): {policy}",
            "lock_timeout": policy.lock_timeout_ms / 1000,
        }
    lines: list[str] = []
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    try:
        steps = execution.migrate(db, revisions, log=lines.append, **kwargs)
    except Exception as exc:
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {_first(exc)}",
                          "log": lines[-40:], **described}))  # fmt: skip
        return
    failed = [s for s in steps if not s.ok]
    print(
        json.dumps(
            {
                "ok": len(steps) == len(revisions) and not failed,
                "error": failed[0].error if failed else "",
                "seconds": time.monotonic() - started,
                "steps": [s.to_json() for s in steps],
                "log": lines[-40:],
                **described,
            }
        )
    )


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


# --- The report ---


def say(text: str) -> None:
    print(text, flush=True)


def cell(result: dict[str, Any] | None) -> str:
    if result is None:
        return "-"
    text = f"{result['longest']:5.2f} / {result['stalled']:5.2f} [{result['seconds']:5.1f}]"
    if not result["ok"]:
        text += " FAILED"
    elif result["errors"]:
        text += f" {result['errors']} err"
    return text


def report(bench: Bench, base: dict[str, Any]) -> None:
    args = bench.args
    modes = args.modes
    limit = bench.lock_timeout if bench.lock_timeout is not None else DEFAULT_LOCK_TIMEOUT
    width = 28
    say("")
    say(
        f"{args.clients} clients on {args.users:,} users. Each cell: longest stall / stalled "
        f"in all (the gaps over {STALL_THRESHOLD * 1000:.0f} ms with no transaction "
        "completing) [the migration's wall time], in seconds."
    )
    say(
        f"Noise floor (the load alone, 5 s): longest {base['longest']:.3f} s, stalled "
        f"{base['stalled']:.3f} s; {base['tps']:.0f} tx/s, p50 {base['p50']} ms, "
        f"p99 {base['p99']} ms."
    )
    say(f"(b) ran {bench.guarded_by or 'execution.migrate'}.")
    header = f"{'pattern':40} | " + " | ".join(f"{MODE_TITLES[m]:{width}}" for m in modes)
    if "naive" in modes and "safe" in modes:
        header += " | stalled a/c"
    say(header)
    say("-" * len(header))
    for pattern in selected(args):
        title = pattern.title.format(reader=f"{args.reader_seconds:g}")
        row = f"{title:40} | " + " | ".join(
            f"{cell(bench.results.get((pattern.name, m))):{width}}" for m in modes
        )
        naive = bench.results.get((pattern.name, "naive"))
        safe = bench.results.get((pattern.name, "safe"))
        if naive and safe:
            # A stalled time under the threshold counts as the threshold: no division by zero.
            ratio = naive["stalled"] / max(safe["stalled"], STALL_THRESHOLD)
            row += f" | {ratio:10.0f}x" if ratio >= 1.5 else " |         ~1x"
        say(row)
    say("")
    source = "the policy's" if bench.lock_timeout is not None else "the issue's default"
    say(
        f"Targets: no stall longer than the lock timeout ({limit * 1000:.0f} ms, {source}) and "
        "at most 1 s stalled in all, for (c) on every pattern and for (b) on the queued DDL:"
    )
    checks = [("safe", p.name) for p in selected(args)]
    checks.append(("guarded", "instant_ddl_behind_reader"))
    for mode, name in checks:
        result = bench.results.get((name, mode))
        if mode not in modes or result is None:
            continue
        within = result["ok"] and result["longest"] <= limit and result["stalled"] <= 1.0
        say(
            f"  {MODE_TITLES[mode][:3]} {name:26} {'within' if within else 'OVER':6} "
            f"({result['longest']:.2f} s longest, {result['stalled']:.2f} s stalled"
            + ("" if result["ok"] else f"; failed: {result['error']}")
            + ")"
        )
    for (name, mode), result in bench.results.items():
        if result["ok"]:
            continue
        say(f"{name} {mode} failed: {result['error']}")
        for line in result["child"].get("log", [])[-8:]:
            say(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--patterns", default=",".join(p.name for p in PATTERNS),
        help="comma-separated, of: " + ", ".join(p.name for p in PATTERNS),
    )  # fmt: skip
    parser.add_argument("--modes", default=",".join(MODES), help="of naive, guarded, safe")
    parser.add_argument("--reader-seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="load before the window")
    parser.add_argument("--tail", type=float, default=1.0, help="window after the migration")
    parser.add_argument("--batch", type=int, default=10_000, help="rows per backfill batch")
    parser.add_argument("--cluster", type=Path, help="keep the seeded cluster here, reuse it")
    parser.add_argument("--verbose", action="store_true", help="print each migration's log")
    parser.add_argument("--child-alembic", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--child-runway", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_alembic:
        child_alembic(*args.child_alembic)
        return
    if args.child_runway:
        child_runway(args.child_runway[0], args.child_runway[1:])
        return
    args.patterns = [p.strip() for p in args.patterns.split(",") if p.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [p for p in args.patterns if p not in BY_NAME] + [
        m for m in args.modes if m not in MODES
    ]
    if unknown or args.users <= 0 or args.clients < 8:
        parser.error(
            f"unknown pattern or mode: {', '.join(unknown)}" if unknown
            else "--users must be positive and --clients at least 8"
        )  # fmt: skip

    begun = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="runway-bench-stalls-"))
    work.chmod(0o755)
    say(
        f"bench/stalls: {args.users:,} users, {args.clients} clients; load average "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    bench = Bench(args, work)
    try:
        prepare_cluster(bench)
        register(bench)
        base = baseline(bench)
        for pattern in selected(args):
            run_sql(bench, pattern.prepare)
            for mode in args.modes:
                result = run_once(bench, pattern, mode)
                bench.results[(pattern.name, mode)] = result
                child = result["child"]
                if mode == "guarded" and child.get("guarded_by"):
                    bench.guarded_by = child["guarded_by"]
                if child.get("lock_timeout") is not None:
                    bench.lock_timeout = child["lock_timeout"]
                say(
                    f"  {pattern.name:26} {mode:8} {cell(result)}  {result['tps']:.0f} tx/s"
                    + (f"  ({result['error']})" if not result["ok"] else "")
                    + (f"  load: {result['load_error']}" if result["load_error"] else "")
                )
                if args.verbose:
                    for line in child.get("log", []):
                        say(f"      {line}")
                reset(bench, pattern)
            run_sql(bench, pattern.finish)
        report(bench, base)
        say(f"\nwhole bench: {(time.monotonic() - begun) / 60:.1f} min")
    finally:
        if bench.cluster is not None:
            bench.cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
