"""Helpers shared by the tests: constants, the cast's factory, waiting with a bound."""

from __future__ import annotations

import shutil
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_ROLE = "app_owner"
TARGET_PASSWORD = "app-owner-secret"
TARGET_PASSWORD_ENV = "RUNWAY_DB_TEST_TARGET_PASSWORD"
TARGET_TEMPLATE = "analyticbot_template"


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def make_user(username: str, role: str | None) -> Any:
    from django.contrib.auth.models import User

    from dashboard.accounts.roles import Role, grant

    user = User.objects.create_user(username, f"{username}@example.com", "pw-" + username)
    if role:
        grant(user, Role[role.upper()])
    return user


def make_database(**kwargs: Any) -> Any:
    from dashboard.databases.models import ManagedDatabase

    kwargs.setdefault("name", "analyticbot")
    kwargs.setdefault("environment", "production")
    kwargs.setdefault("dsn", "host=127.0.0.1 port=1 dbname=analyticbot user=app_owner")
    kwargs.setdefault("password_ref", f"env:{TARGET_PASSWORD_ENV}")
    kwargs.setdefault("script_location", "migrations_target")
    kwargs.setdefault("critical_tables", ["users", "payments"])
    bound = kwargs.pop("bound", True)
    db = ManagedDatabase(**kwargs)
    if bound:
        db.bind_secret(None)  # as the system registers it: the reference goes where the DSN is
    db.save(force_insert=True)
    return db


ENV_PY = "from alembic import context\n"


def write_revision(
    folder: Path,
    rev: str,
    down: str | tuple[str, ...] | None,
    message: str = "",
    *,
    downgrade: bool = True,
    filename: str | None = None,
    branch_labels: str | tuple[str, ...] | None = None,
    depends_on: str | tuple[str, ...] | None = None,
    versions: Path | None = None,
) -> Path:
    """A revision file in ``folder/versions`` (or ``versions``); ``folder`` gets an env.py."""
    versions = versions or folder / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (folder / "env.py").write_text(ENV_PY)
    body = "    op.drop_table('t')" if downgrade else "    pass"
    path = versions / (filename or f"{rev}_{(message or 'step').replace(' ', '_')}.py")
    path.write_text(
        f'"""{message or "step " + rev}"""\n'
        "from alembic import op\n\n"
        f"revision = {rev!r}\n"
        f"down_revision = {down!r}\n"
        f"branch_labels = {branch_labels!r}\n"
        f"depends_on = {depends_on!r}\n\n\n"
        "def upgrade():\n    op.create_table('t')\n\n\n"
        f"def downgrade():\n{body}\n"
    )
    return path


def two_location_project(root: Path) -> Path:
    """A project registered as its alembic.ini, whose revisions live in two version locations.

    ``app/migrations/versions``: 1a0c (label ``core``) → 2b1d → 3c2e, the application's tables;
    ``billing/versions``: b100 (label ``billing``, a base that depends on 2b1d) → b200. Returns
    the alembic.ini, beside ``app/`` and ``billing/``.
    """
    script = root / "app" / "migrations"
    write_revision(script, "1a0c", None, "create users and plans", branch_labels="core")
    write_revision(script, "2b1d", "1a0c", "add channels")
    write_revision(script, "3c2e", "2b1d", "index channels by owner")
    billing = root / "billing" / "versions"
    write_revision(
        script,
        "b100",
        None,
        "create invoices",
        branch_labels="billing",
        depends_on="2b1d",
        versions=billing,
    )
    write_revision(script, "b200", "b100", "add invoices.status", versions=billing)
    ini = root / "alembic.ini"
    ini.write_text(
        "[alembic]\n"
        "script_location = %(here)s/app/migrations\n"
        "version_locations = %(here)s/app/migrations/versions %(here)s/billing/versions\n"
        "path_separator = space\n"
    )
    return ini


def linear(folder: Path, count: int) -> Path:
    down = None
    for i in range(1, count + 1):
        rev = f"{i:04d}"
        write_revision(folder, rev, down)
        down = rev
    return folder


def alembic_project(folder: Path, *revisions: tuple[str, str, str]) -> Path:
    """An Alembic project whose base is a stand-in for 0016 (the seeded target's revision),
    followed by ``(revision, down_revision, body of upgrade())`` in order."""
    (folder / "versions").mkdir(parents=True)
    shutil.copy(ROOT / "migrations_target" / "env.py", folder / "env.py")
    steps = [("0016", "None", "pass"), *((r, repr(d), body) for r, d, body in revisions)]
    for rev, down, body in steps:
        (folder / "versions" / f"{rev}_step.py").write_text(
            "import threading\n\nimport psycopg\nfrom alembic import op\n\n"
            f"revision = {rev!r}\ndown_revision = {down}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n{textwrap.indent(textwrap.dedent(body).strip(), '    ')}\n\n\n"
            "def downgrade():\n    pass\n"
        )
    return folder


# --- Backups ---

S3_ACCESS_KEY = "runway-test-key"  # the same as conftest's: the moto server accepts any
S3_SECRET_KEY = "runway-test-secret"
BACKUP_PASSPHRASE = "correct horse battery staple"


def backup_outcome(outcome: str) -> dict[str, Any]:
    """The job fields of a Backup row that the pages call ``outcome``: "completed" is a
    succeeded backup, "pruned" a succeeded one with ``pruned_at``; any other word is the state
    itself (queued, running, failed, interrupted, cancelled)."""
    from django.utils import timezone

    if outcome == "completed":
        return {"state": "succeeded"}
    if outcome == "pruned":
        return {"state": "succeeded", "pruned_at": timezone.now()}
    return {"state": outcome}


def validation_outcome(outcome: str) -> dict[str, Any]:
    """The job fields of a Validation row with that outcome: "passed" (it ran, every check
    held), "failed" (it ran and a check failed: succeeded, not passed), "could not run" (the job
    failed); any other word is the state itself (queued, running, interrupted, cancelled)."""
    if outcome == "passed":
        return {"state": "succeeded", "passed": True}
    if outcome == "failed":
        return {"state": "succeeded", "passed": False}
    if outcome == "could not run":
        return {"state": "failed"}
    return {"state": outcome}


def s3_client(endpoint: str, **kwargs: Any) -> Any:
    """A plain boto3 client on the test S3 endpoint (no Runway code in between)."""
    import boto3

    kwargs.setdefault("aws_access_key_id", S3_ACCESS_KEY)
    kwargs.setdefault("aws_secret_access_key", S3_SECRET_KEY)
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **kwargs)


def scratch_databases(cluster: Any) -> list[str]:
    """Validation scratch databases present on the cluster (there should be none left)."""
    import psycopg

    with psycopg.connect(cluster.dsn()) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'runway_scratch_%'"
        ).fetchall()
    return [row[0] for row in rows]


@contextmanager
def nearly_full_disk(folder: Path, free: int = 32 * 1024) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted on ``folder`` with about ``free`` bytes left (needs root, which CI
    is); skips the test where mounting is not permitted."""
    import subprocess

    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        (folder / "filler").write_bytes(b"\0" * (1024 * 1024 - free))
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def checked(db: Any, *current: str) -> Any:
    """A successful connection check of ``db`` that read ``current`` from alembic_version."""
    from django.utils import timezone

    from dashboard.databases.models import ConnectionCheck

    return ConnectionCheck.objects.create(
        database=db,
        state="succeeded",
        current_revisions=list(current),
        server_version="15",
        finished_at=timezone.now(),
    )


def runbook(text: str) -> Any:
    """A runbook from YAML text, against the registered actions."""
    from runbooks.actions import REGISTRY
    from runbooks.loader import load_text

    return load_text(text, "test.yaml", REGISTRY.keys())


CHECKS_THEN_APPROVAL = """
id: small
title: Small deployment
needs_target: true
phases:
  - id: first
    title: First
    steps:
      - id: look
        check: Look at the revisions
      - id: maybe
        check: Optional thing
        required: false
      - id: approve
        approval: A lead approves
        role: lead
  - id: second
    title: Second
    steps:
      - id: done
        check: Say it is done
"""


def log_in(page: Any, live_server: Any, username: str) -> None:
    """Log a cast member (password ``pw-<name>``) in through the real form, in Chromium."""
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"pw-{username}")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/")


# --- A fake PostgreSQL server (secrets must never reach it) ---


class FakePostgres:
    """A socket that speaks just enough of the PostgreSQL protocol to ask every client for its
    password in clear text (or with md5), and records what each client sends: its startup
    parameters and any password message. A real attacker's server would do exactly this."""

    CODES = {"cleartext": 3, "md5": 5}

    def __init__(self, auth: str = "cleartext") -> None:
        import socket
        import threading

        self.auth = auth
        self.startups: list[dict[str, str]] = []
        self.passwords: list[bytes] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=analyticbot user=app_owner"

    @property
    def received_anything_secret(self) -> bool:
        return any(self.passwords)

    def _serve(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: Any) -> None:
        import struct

        def read(n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = conn.recv(n - len(data))
                if not chunk:
                    raise EOFError
                data += chunk
            return data

        try:
            with conn:
                while True:
                    length, code = struct.unpack("!ii", read(8))
                    if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: no
                        conn.sendall(b"N")
                        continue
                    break
                fields = read(length - 8).split(b"\0")
                self.startups.append(
                    {
                        k.decode(): v.decode()
                        for k, v in zip(fields[::2], fields[1::2], strict=False)
                        if k
                    }
                )
                request = struct.pack(
                    "!ii", 8 if self.auth == "cleartext" else 12, self.CODES[self.auth]
                )
                conn.sendall(b"R" + request + (b"salt" if self.auth == "md5" else b""))
                kind = conn.recv(1)
                if kind == b"p":
                    (size,) = struct.unpack("!i", read(4))
                    self.passwords.append(read(size - 4))
                elif kind:
                    self.passwords.append(kind + conn.recv(4096))
        except (EOFError, OSError, struct.error):
            pass

    def close(self) -> None:
        self._sock.close()


@contextmanager
def fake_postgres(auth: str = "cleartext") -> Iterator[FakePostgres]:
    server = FakePostgres(auth)
    try:
        yield server
    finally:
        server.close()


# --- Real Celery workers a test may kill ---


@contextmanager
def worker_process(env: dict[str, str], queue: str, log: Path) -> Iterator[Any]:
    """A real ``celery worker`` consuming only ``queue`` (RUNWAY_JOB_QUEUE for the jobs the
    test sends), so the session's worker never takes its jobs. Yields the process (a test may
    SIGKILL it); ended on exit."""
    import subprocess
    import sys

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
                "--loglevel",
                "INFO",
                "-Q",
                queue,
                "-n",
                f"{queue}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env={**env, "RUNWAY_JOB_QUEUE": queue},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: "ready." in log.read_text() or proc.poll() is not None, "a worker", timeout=90
        )
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited: {log.read_text()[-2000:]}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class SilentServer:
    """A TCP port that accepts connections and never answers: a client hangs on it until its
    own timeout (a managed database that stopped responding)."""

    def __init__(self) -> None:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port: int = self._sock.getsockname()[1]
        self._held: list[Any] = []

    def close(self) -> None:
        self._sock.close()


# --- Rollback triggers ---


class Health:
    """The application's /health, served on 127.0.0.1, its answer switched by the test."""

    def __init__(self) -> None:
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = outer.body().encode()
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.value = "0"
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/health"

    def body(self) -> str:
        return self.value

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def rule_of(db: Any, signal: str) -> Any:
    from dashboard.triggers import rules

    return next(r for r in rules.rules_of(db) if r.signal == signal)


def only(db: Any, signal: str, **values: Any) -> Any:
    """Turn every rule of ``db`` off but ``signal``'s, set to ``values``."""
    from dashboard.triggers import rules

    for r in rules.rules_of(db):
        r.enabled = r.signal == signal
        r.save()
    rule = rule_of(db, signal)
    for k, v in values.items():
        setattr(rule, k, v)
    rule.enabled = True
    rule.save()
    return rule


# --- Migration tests ---


def migrate_to(targets: list[tuple[str, str]]) -> Any:
    """Migrate Runway's database to ``targets`` (later migrations that need them are unapplied
    too); the models as the database now has them: the state of exactly what is applied."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    MigrationExecutor(connection).migrate(targets)
    fresh = MigrationExecutor(connection)
    graph = fresh.loader.graph
    applied = {node for node in fresh.loader.applied_migrations if node in graph.nodes}
    heads = [
        node
        for node in applied
        if not any(child.key in applied for child in graph.node_map[node].children)
    ]
    return fresh.loader.project_state(heads).apps


def migrate_to_latest() -> None:
    """Every app at its last migration again (after a test took some back)."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


# --- Runs, stepped in process ---


def drain(*runs: Any) -> None:
    """Run the runs' queued step jobs in this process (what the worker does), in run, phase and
    step order, until none is queued."""
    from dashboard.jobs import lifecycle
    from dashboard.jobs.models import JobState
    from runbooks.models import StepJob

    while True:
        job = (
            StepJob.objects.filter(step__run__in=runs, state=JobState.QUEUED)
            .order_by("step__run", "step__phase_index", "step__position")
            .first()
        )
        if job is None:
            return
        lifecycle.run("run_step", job.pk)


def recorded_backup(run: Any, revision: str = "0016") -> Any:
    """A completed backup row with a passed validation, given to ``run``: what lets its upgrade
    run, for tests whose path never reads the backup itself."""
    from dashboard.backups.models import Backup, Validation
    from runbooks.models import Run

    backup = Backup.objects.create(database=run.database, state="succeeded", revision=revision)
    Validation.objects.create(backup=backup, state="succeeded", passed=True)
    Run.objects.filter(pk=run.pk).update(backup=backup)
    return backup


class Thing:
    """Any object an audit event can be about: a pk and a name."""

    def __init__(self, pk: Any, name: str) -> None:
        self.pk, self.name = pk, name

    def __str__(self) -> str:
        return self.name


def record_at(monkeypatch: Any, when: str, *args: Any, **kwargs: Any) -> Any:
    """chain.record() with the clock at ``when`` (UTC), so events fall in a chosen period."""
    from datetime import UTC, datetime

    from dashboard.audit import chain

    at = datetime.fromisoformat(when).replace(tzinfo=UTC)
    with monkeypatch.context() as patched:
        patched.setattr(chain.timezone, "now", lambda: at)
        return chain.record(*args, **kwargs)
