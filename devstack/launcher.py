"""`make demo` (``python -m devstack demo``): every real component Runway needs, started on this
machine, stopped on Ctrl-C.

A private PostgreSQL cluster under ``.runway/`` (Runway's own database and the demo targets),
Redis, a Celery worker, Celery beat, the web server and the demo's application (the load process
of :mod:`devstack.load`, playing against the production target so that a deployment runs under
live traffic), each a real process. Running it again reuses the cluster, the users and the
databases it made the first time.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from devstack import redis_server
from devstack.cluster import Cluster, free_port, start_cluster

ROOT = Path(__file__).resolve().parent.parent
RUNWAY_ROLE = "runway"
TARGET_ROLE = "app_owner"
LOAD_TARGET = "analyticbot"  # the production database of devstack.demo.TARGETS
LOAD_PORT = 8090


def _secret(path: Path, nbytes: int = 24) -> str:
    """Read a secret kept under .runway/, making it on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(nbytes) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def _secret_key(path: Path) -> str:
    """Django's secret key: 64 characters (Runway refuses fewer than 50 with DEBUG off). A shorter
    one made by an earlier demo is replaced, which only logs everyone out."""
    if path.exists() and len(path.read_text().strip()) < 50:
        path.unlink()
    return _secret(path, nbytes=48)


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # As gunicorn binds: connections of an earlier run in TIME_WAIT do not make it busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class Stack:
    def __init__(self, home: Path, web_port: int, users: int, load_port: int | None = None) -> None:
        self.home = home
        self.web_port = web_port
        self.users = users
        # None: LOAD_PORT, or any free port when that one is taken (another demo's load).
        self.load_port = load_port
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.cluster: Cluster | None = None
        self.redis_url = ""
        self.logs = home / "logs"
        # The managed databases' password files, apart from Runway's own secrets (secrets/):
        # a database's password reference may only point in here (RUNWAY_SECRETS_DIR).
        self.db_secrets = home / "db-secrets"

    def env(self, redis_url: str) -> dict[str, str]:
        assert self.cluster is not None
        own_password = _secret(self.home / "secrets" / "runway-db.password")
        _secret(self.home / "secrets" / "backup-passphrase")
        return {
            **os.environ,
            "DATABASE_URL": self.cluster.url("runway", RUNWAY_ROLE, own_password),
            "CELERY_BROKER_URL": redis_url,
            # As it will be deployed: DEBUG off (static files through WhiteNoise), a real key.
            "RUNWAY_DEBUG": os.environ.get("RUNWAY_DEBUG", "0"),
            "RUNWAY_SECRET_KEY": _secret_key(self.home / "secrets" / "django-secret-key"),
            # Backups go to a folder under the demo's home, sealed with a passphrase kept beside
            # them (in production, keep the passphrase far from the backups).
            "RUNWAY_BACKUP_STORAGE": os.environ.get(
                "RUNWAY_BACKUP_STORAGE", f"file://{self.home / 'backups'}"
            ),
            "RUNWAY_BACKUP_PASSPHRASE_FILE": str(self.home / "secrets" / "backup-passphrase"),
            "RUNWAY_SECRETS_DIR": str(self.db_secrets),
            # The rollback triggers poll the demo application's /health on 127.0.0.1 (a URL
            # the webhook rules refuse unless private addresses are allowed).
            "RUNWAY_WEBHOOK_ALLOW_PRIVATE": os.environ.get("RUNWAY_WEBHOOK_ALLOW_PRIVATE", "1"),
            "PYTHONUNBUFFERED": "1",
        }

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((name, proc))
        return proc

    def start(self) -> None:
        if not _port_is_free(self.web_port):
            raise SystemExit(
                f"127.0.0.1:{self.web_port} is taken (another Runway?); "
                "choose another port: RUNWAY_PORT=8001 make demo"
            )
        if self.load_port is not None and not _port_is_free(self.load_port):
            raise SystemExit(
                f"127.0.0.1:{self.load_port} is taken; choose another port for the demo's "
                "application: RUNWAY_LOAD_PORT=8091 make demo"
            )
        if self.load_port is None:
            self.load_port = LOAD_PORT if _port_is_free(LOAD_PORT) else free_port()
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o755)
        say(f"PostgreSQL: private cluster in {self.home / 'pg'}")
        self.cluster = start_cluster(self.home / "pg")
        self.cluster.create_role(RUNWAY_ROLE, _secret(self.home / "secrets" / "runway-db.password"))
        self.cluster.create_database("runway", owner=RUNWAY_ROLE)
        target_password_file = self.db_secrets / "analyticbot.password"
        old_place = self.home / "secrets" / "analyticbot.password"  # before RUNWAY_SECRETS_DIR
        if old_place.exists() and not target_password_file.exists():
            target_password_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            old_place.replace(target_password_file)
        target_password = _secret(target_password_file)
        self.cluster.create_role(TARGET_ROLE, target_password)
        # Backup validations restore into scratch databases, and rehearsals copy the database:
        # the demo's application role may create databases (production: RUNWAY_SCRATCH_DSN).
        self.cluster.execute(f"ALTER ROLE {TARGET_ROLE} CREATEDB")
        # The gates read the data directory (disk use) and every session (long transactions).
        self.cluster.execute(f"GRANT pg_read_all_settings, pg_read_all_stats TO {TARGET_ROLE}")

        redis_port = free_port()
        say(f"Redis on 127.0.0.1:{redis_port}")
        self.spawn(
            "redis",
            redis_server.command(redis_port),
            dict(os.environ),
        )
        _wait_port(redis_port)
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = self.env(self.redis_url)
        manage = [sys.executable, "manage.py"]
        say("Runway's database: migrate")
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        subprocess.run(
            [*manage, "collectstatic", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
        )
        say("Demo users and target databases")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "devstack",
                "setup_demo",
                "--host",
                self.cluster.host,
                "--port",
                str(self.cluster.port),
                "--user",
                TARGET_ROLE,
                "--superuser-password-file",
                str(self.home / "pg" / "password"),
                "--password-file",
                str(target_password_file),
                "--users",
                str(self.users),
                "--load-port",
                str(self.load_port),
                "--sandbox-scripts",
                str(self.home / "sandbox-scripts"),
            ],
            cwd=ROOT,
            env=env,
            check=True,
        )
        self.spawn(
            "worker",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "dashboard",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                "2",
            ],
            env,
        )
        self.spawn(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "dashboard",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.home / "beat-schedule"),
            ],
            env,
        )
        self.spawn(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "dashboard.wsgi",
                "--bind",
                f"127.0.0.1:{self.web_port}",
                "--workers",
                "2",
                # Threads, and a timeout long enough for a big streamed export or a PDF.
                "--worker-class",
                "gthread",
                "--threads",
                "4",
                "--timeout",
                "120",
                "--access-logfile",
                "-",
            ],
            env,
        )
        _wait_port(self.web_port)
        self.spawn(
            "load",
            [
                sys.executable,
                "-m",
                "devstack",
                "load",
                "--dsn",
                f"host={self.cluster.host} port={self.cluster.port} dbname={LOAD_TARGET} "
                f"user={TARGET_ROLE}",
                "--password-file",
                str(target_password_file),
                "--port",
                str(self.load_port),
            ],
            {**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        _wait_port(self.load_port)
        say(
            f"The demo's application plays against {LOAD_TARGET}: "
            f"http://127.0.0.1:{self.load_port}/health and /stats"
        )

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        # One deadline for all of them (they stop side by side), not 15 s each in turn: a worker
        # finishing a job and a busy gunicorn must not add up past what Ctrl-C should take.
        deadline = time.monotonic() + 15
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.cluster is not None:
            self.cluster.stop()
        say("stopped everything it started")

    def watch(self) -> None:
        while True:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise SystemExit(
                        f"{name} exited with {proc.returncode}; see {self.logs / (name + '.log')}"
                    )
            time.sleep(0.5)


def say(text: str) -> None:
    print(f"runway: {text}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack")
    parser.add_argument("command", choices=["demo"])
    parser.add_argument("--home", type=Path, default=ROOT / ".runway")
    parser.add_argument("--port", type=int, default=int(os.environ.get("RUNWAY_PORT", "8000")))
    parser.add_argument("--users", type=int, default=2000, help="seeded users per target")
    parser.add_argument(
        "--load-port",
        type=int,
        default=int(os.environ["RUNWAY_LOAD_PORT"]) if os.environ.get("RUNWAY_LOAD_PORT") else None,
        help=f"the demo application's /health and /stats (default {LOAD_PORT}, or a free one)",
    )
    args = parser.parse_args(argv)
    stack = Stack(args.home.resolve(), args.port, args.users, args.load_port)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too, explicitly: a process started in the background by a shell inherits SIGINT
    # ignored, and Python then installs no KeyboardInterrupt for it; Ctrl-C, or a test's
    # SIGINT, would leave the whole stack running.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    try:
        stack.start()
        say(f"Runway is up: http://127.0.0.1:{args.port}/  (logs in {stack.logs}; Ctrl-C stops)")
        stack.watch()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
