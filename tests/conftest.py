"""Real services for the whole session: a private PostgreSQL cluster, Redis, a Celery worker.

Nothing here is a mock. The cluster holds Runway's own test database (created by pytest-django)
and the managed target databases, which are cloned from a template migrated with the real
``migrations_target`` project and seeded with the real seeding code.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings as django_settings
from helpers import (
    BACKUP_PASSPHRASE,
    ROOT,
    TARGET_PASSWORD,
    TARGET_PASSWORD_ENV,
    TARGET_ROLE,
    TARGET_TEMPLATE,
    make_user,
    wait_until,
)

from devstack import redis_server
from devstack.cluster import Cluster, free_port, start_cluster

ARTIFACTS = ROOT / "test-artifacts"

os.environ[TARGET_PASSWORD_ENV] = TARGET_PASSWORD
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the ORM under Playwright's sync API
# DEBUG is off in the tests, as in production, so a process without a real secret key refuses to
# start: the workers and manage.py commands the tests start inherit this one; this process (whose
# settings were read before this file) gets it directly.
os.environ.setdefault("RUNWAY_SECRET_KEY", secrets.token_urlsafe(50))
django_settings.SECRET_KEY = os.environ["RUNWAY_SECRET_KEY"]


# --- PostgreSQL ---


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    base = Path(tempfile.mkdtemp(prefix="runway-test-"))
    base.chmod(0o755)
    cluster = start_cluster(base / "pg")
    cluster.create_role(TARGET_ROLE, TARGET_PASSWORD)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(pg_cluster: Cluster) -> None:
    from django.conf import settings

    # The cast logs in hundreds of times; a slow password hash only slows the tests.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.DATABASES["default"].update(
        HOST=pg_cluster.host,
        PORT=str(pg_cluster.port),
        USER="postgres",
        PASSWORD=pg_cluster.password,
        NAME="runway",
    )


def migrate_target(cluster: Cluster, dbname: str, revision: str = "0016") -> None:
    """Upgrade a target database with the real Alembic CLI, as the team's CI would."""
    subprocess.run(
        [
            str(Path(sys.executable).parent / "alembic"),
            "-c",
            str(ROOT / "migrations_target" / "alembic.ini"),
            "-x",
            f"url={cluster.url(dbname, TARGET_ROLE, TARGET_PASSWORD)}",
            "upgrade",
            revision,
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="session")
def target_template(pg_cluster: Cluster) -> str:
    """A database at 0016 with a small consistent data set, cloned by ``make_target``."""
    from devstack.seeding import seed

    pg_cluster.create_database(TARGET_TEMPLATE, owner=TARGET_ROLE, replace=True)
    migrate_target(pg_cluster, TARGET_TEMPLATE)
    with psycopg.connect(pg_cluster.dsn(TARGET_TEMPLATE, TARGET_ROLE, TARGET_PASSWORD)) as conn:
        seed(conn, users=200)
    return TARGET_TEMPLATE


@pytest.fixture
def make_target(pg_cluster: Cluster, target_template: str) -> Iterator[Callable[..., str]]:
    """Clone the template into a fresh database; return its DSN (without the password)."""
    made: list[str] = []

    def make(name: str | None = None) -> str:
        name = name or f"target_{len(made)}_{os.getpid()}_{time.monotonic_ns() % 10**6}"
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(
                f'CREATE DATABASE "{name}" TEMPLATE "{target_template}" OWNER {TARGET_ROLE}'
            )
        made.append(name)
        return f"host={pg_cluster.host} port={pg_cluster.port} dbname={name} user={TARGET_ROLE}"

    yield make
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- Redis and Celery ---


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        redis_server.command(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"

    def answers() -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(url).ping())
        except redis.ConnectionError:
            return False

    wait_until(answers, "redis-server")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session", autouse=True)
def broker(redis_url: str) -> str:
    """Every task any test enqueues goes to the session's real Redis."""
    from django.conf import settings

    from dashboard.celery import app

    app.conf.broker_url = settings.CELERY_BROKER_URL = redis_url
    return redis_url


@pytest.fixture(scope="session")
def backup_passphrase_file() -> Iterator[Path]:
    """The backup passphrase in a 0600 file, as RUNWAY_BACKUP_PASSPHRASE_FILE gives it."""
    folder = Path(tempfile.mkdtemp(prefix="runway-passphrase-"))
    path = folder / "passphrase"
    path.write_text(BACKUP_PASSPHRASE + "\n")
    path.chmod(0o600)
    yield path
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def db_secrets() -> Iterator[Path]:
    """The managed databases' secrets directory (RUNWAY_SECRETS_DIR) of the tests and the
    worker: a ``file:`` password reference must point in here."""
    from django.conf import settings

    folder = Path(tempfile.mkdtemp(prefix="runway-db-secrets-"))
    settings.RUNWAY_SECRETS_DIR = str(folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def worker_env(
    django_db_setup: Any,
    broker: str,
    pg_cluster: Cluster,
    s3_endpoint: str,
    backup_passphrase_file: Path,
    db_secrets: Path,
) -> dict[str, str]:
    """The environment of a worker process writing to the test database."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    return {
        **os.environ,
        "DATABASE_URL": pg_cluster.url(db["NAME"]),
        "CELERY_BROKER_URL": broker,
        # Backups: each test picks its store through BackupPolicy.storage_url.
        "RUNWAY_BACKUP_PASSPHRASE_FILE": str(backup_passphrase_file),
        "RUNWAY_S3_ENDPOINT_URL": s3_endpoint,
        "RUNWAY_S3_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "RUNWAY_S3_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "RUNWAY_SECRETS_DIR": str(db_secrets),
    }


@pytest.fixture(scope="session")
def celery_worker(worker_env: dict[str, str]) -> Iterator[Path]:
    """A real ``celery worker`` process on the real broker, writing to the test database."""
    env = worker_env
    log = Path(tempfile.mkdtemp(prefix="runway-worker-")) / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "dashboard",
                "worker",
                "--pool",
                "solo",
                "--concurrency",
                "1",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "ready." in log.read_text() or proc.poll() is not None, "celery worker")
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited: {log.read_text()[-2000:]}")
        yield log
    finally:
        proc.terminate()
        proc.wait(20)


# --- The cast ---


@pytest.fixture
def viewer(db: None) -> Any:
    return make_user("vera", "viewer")


@pytest.fixture
def engineer(db: None) -> Any:
    return make_user("erin", "engineer")


@pytest.fixture
def lead(db: None) -> Any:
    return make_user("leo", "lead")


@pytest.fixture
def admin_user(db: None) -> Any:
    return make_user("ada", "admin")


@pytest.fixture
def outsider(db: None) -> Any:
    return make_user("otto", None)


# --- Browser ---

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    return {
        **browser_type_launch_args,
        "executable_path": "/usr/bin/chromium",
        "args": CHROMIUM_ARGS,
    }


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# --- S3 (moto's server: a real HTTP S3 endpoint on loopback) ---


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


S3_ACCESS_KEY = "runway-test-key"
S3_SECRET_KEY = "runway-test-secret"


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket on the S3 endpoint."""
    import boto3

    name = f"backups-{time.monotonic_ns()}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name="us-east-1",
    ).create_bucket(Bucket=name)
    return name


# --- Backups and scratch databases (shared by backups, schema and runbooks tests) ---

SCRATCH_PASSWORD_ENV = "RUNWAY_TEST_SCRATCH_PASSWORD"


@pytest.fixture
def local_store(settings: Any, tmp_path: Path) -> Path:
    """Backups go to a local folder; the passphrase is set."""
    store = tmp_path / "store"
    settings.RUNWAY_BACKUP_PASSPHRASE = BACKUP_PASSPHRASE
    settings.RUNWAY_BACKUP_STORAGE = f"file://{store}"
    return store


@pytest.fixture
def scratch_server(settings: Any, pg_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """Scratch databases are made by the cluster's superuser (RUNWAY_SCRATCH_DSN)."""
    monkeypatch.setenv(SCRATCH_PASSWORD_ENV, pg_cluster.password)
    settings.RUNWAY_SCRATCH_DSN = (
        f"host={pg_cluster.host} port={pg_cluster.port} dbname=postgres user=postgres"
    )
    settings.RUNWAY_SCRATCH_PASSWORD_REF = f"env:{SCRATCH_PASSWORD_ENV}"
    return pg_cluster


@pytest.fixture
def owner_may_create_databases(pg_cluster: Cluster) -> Iterator[None]:
    """The target's own role may create the scratch database (no RUNWAY_SCRATCH_DSN)."""
    pg_cluster.execute(f"ALTER ROLE {TARGET_ROLE} CREATEDB")
    yield
    pg_cluster.execute(f"ALTER ROLE {TARGET_ROLE} NOCREATEDB")


@pytest.fixture(autouse=True)
def _no_heartbeats_inside_a_test_transaction(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test that is not transactional runs inside one transaction no other connection sees. A
    job it runs in-process would have its heartbeat thread (its own connection) find no row and
    take the job for lost, as soon as the job outlives one heartbeat (a slow moment is enough).
    Such tests run jobs without the thread's beats; transactional tests (and real workers) keep
    them."""
    marker = request.node.get_closest_marker("django_db")
    names = request.fixturenames
    uses_db = marker is not None or "db" in names
    transactional = (
        marker is not None
        and (bool(marker.kwargs.get("transaction")) or marker.args[:1] == (True,))
    ) or bool({"transactional_db", "live_server"} & set(names))
    if not uses_db or transactional:
        return
    from dashboard.jobs import lifecycle as jobs

    class Unhurried(jobs._Heartbeat):
        def __init__(self, context: Any, every: float) -> None:
            super().__init__(context, 3600)

    monkeypatch.setattr(jobs, "_Heartbeat", Unhurried)


@pytest.fixture(autouse=True)
def _one_approval_policy_at_a_time(request: pytest.FixtureRequest) -> None:
    """The migration seeds a policy: two leads for a high-risk production change. Most tests
    approve their production runs with one lead; they run without it. The tests of approval
    policies ask for ``seeded_policy``, which puts back exactly what the migration seeds."""
    if "seeded_policy" in request.fixturenames:
        return
    uses_db = request.node.get_closest_marker("django_db") is not None or any(
        name in request.fixturenames for name in ("db", "transactional_db", "live_server")
    )
    if not uses_db:
        return
    request.getfixturevalue("_django_db_helper")
    from runbooks.models import ApprovalPolicy

    ApprovalPolicy.objects.all().delete()


@pytest.fixture
def seeded_policy(db: None) -> Any:
    """The approval policy the migration seeds (two leads for a high-risk production change)."""
    import importlib

    from django.apps import apps

    from runbooks.models import ApprovalPolicy

    importlib.import_module("runbooks.migrations.0006_review").seed_policy(apps, None)
    return ApprovalPolicy.objects.get()


# --- Transactional tests: a flush of what the test wrote ---

# What Django's flush would create again at once (its post_migrate signal): kept, not emptied.
_KEPT_BY_FLUSH = ("django_content_type", "auth_permission")
_APPEND_ONLY = "audit_auditevent"  # its trigger refuses DELETE


def _flush_what_was_written(self: Any) -> None:
    """``TransactionTestCase``'s teardown, faster: empty only the tables that hold rows, with
    DELETE in one transaction (Django's foreign keys are checked at commit, when every row is
    gone), instead of a TRUNCATE of all of Runway's tables and the post_migrate signal (content
    types and permissions written again). The same end state at a fraction of the cost: a
    TRUNCATE makes new files for every table and index, 0.2 s for the 45 tables here.
    The audit table refuses DELETE (its append-only trigger): it is truncated, as before."""
    from django.db import connections, transaction

    for name in self._databases_names(include_mirrors=False):
        connection = connections[name]
        tables = [
            table
            for table in connection.introspection.django_table_names(
                only_existing=True, include_views=False
            )
            if table not in _KEPT_BY_FLUSH
        ]
        quoted = [connection.ops.quote_name(table) for table in tables]
        with transaction.atomic(using=name), connection.cursor() as cursor:
            cursor.execute(
                " UNION ALL ".join(
                    f"SELECT {index} WHERE EXISTS (SELECT FROM {table})"
                    for index, table in enumerate(quoted)
                )
            )
            for (index,) in cursor.fetchall():
                if tables[index] == _APPEND_ONLY:
                    cursor.execute(f"TRUNCATE {quoted[index]}")
                else:
                    cursor.execute(f"DELETE FROM {quoted[index]}")


@pytest.fixture(scope="session", autouse=True)
def _fast_flush() -> Iterator[None]:
    from django.test import TransactionTestCase

    saved = TransactionTestCase._fixture_teardown
    TransactionTestCase._fixture_teardown = _flush_what_was_written
    yield
    TransactionTestCase._fixture_teardown = saved
