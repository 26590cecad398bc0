"""A private PostgreSQL cluster for the demo and the tests.

Debian's server binaries refuse to run as root, so when we are root every server command runs
through ``runuser -u postgres`` in a folder owned by ``postgres``. The cluster listens on loopback
only, on a port we choose, with password (scram) authentication over TCP so that connection
errors such as a wrong password behave as they do in production.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "postgres"


def server_bindir() -> Path:
    """The newest installed server's bin directory (initdb, pg_ctl, postgres)."""
    env = os.environ.get("RUNWAY_PG_BINDIR")
    if env:
        return Path(env)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True
    )
    for candidate in candidates:
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError(
        "No PostgreSQL server found. Install it: apt-get install -y postgresql "
        "(or set RUNWAY_PG_BINDIR to the folder holding initdb and pg_ctl)."
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a server command as the server user; raise with its own words when it fails."""
    result = subprocess.run(_as_server_user(argv), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"{Path(argv[0]).name} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result


def _give_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


@dataclass
class Cluster:
    """A cluster in ``root`` (holding ``data/``, ``run/``, ``password`` and ``log``)."""

    root: Path
    port: int
    password: str
    host: str = "127.0.0.1"

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "postgres.log"

    def dsn(
        self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None
    ) -> str:
        pw = self.password if password is None and user == SUPERUSER else password
        parts = [f"host={self.host}", f"port={self.port}", f"dbname={dbname}", f"user={user}"]
        if pw:
            parts.append(f"password={pw}")
        return " ".join(parts)

    def url(self, dbname: str, user: str = SUPERUSER, password: str | None = None) -> str:
        pw = self.password if password is None and user == SUPERUSER else password
        auth = f"{user}:{pw}" if pw else user
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    def is_initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _give_to_server_user(self.root)
        pwfile = self.root / "password"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        _give_to_server_user(pwfile)
        run_dir = self.root / "run"
        run_dir.mkdir(exist_ok=True)
        _give_to_server_user(run_dir)
        _run(
            [
                str(server_bindir() / "initdb"),
                "--no-sync",
                "-D",
                str(self.datadir),
                "-U",
                SUPERUSER,
                "--pwfile",
                str(pwfile),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        )

    def start(self, *, fsync: bool = False, timeout: float = 30) -> None:
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root / 'run'}",
            "-c max_connections=200",
            "-c wal_level=replica",
        ]
        if not fsync:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        if not self.logfile.exists():
            self.logfile.touch()
            _give_to_server_user(self.logfile)
        _run(
            [
                str(server_bindir() / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-o",
                " ".join(options),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ]
        )

    def stop(self) -> None:
        if not (self.datadir / "postmaster.pid").exists():
            return
        subprocess.run(
            _as_server_user(
                [
                    str(server_bindir() / "pg_ctl"),
                    "-D",
                    str(self.datadir),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ]
            ),
            capture_output=True,
        )

    def is_running(self) -> bool:
        result = subprocess.run(
            _as_server_user([str(server_bindir() / "pg_ctl"), "-D", str(self.datadir), "status"]),
            capture_output=True,
        )
        return result.returncode == 0

    def wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def execute(self, sql: str, dbname: str = "postgres", params: tuple | None = None) -> None:
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(sql, params)  # type: ignore[arg-type]

    def create_role(self, name: str, password: str, *, superuser: bool = False) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL("{} ROLE {} WITH LOGIN {} PASSWORD {}").format(
                    sql.SQL(verb),
                    sql.Identifier(name),
                    sql.SQL("SUPERUSER" if superuser else "NOSUPERUSER"),
                    sql.Literal(password),
                )
            )

    def create_database(self, name: str, owner: str = SUPERUSER, *, replace: bool = False) -> bool:
        """Create ``name`` unless it exists; return whether it was created."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists and not replace:
                return False
            if exists:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(owner)
                )
            )
            return True


def start_cluster(root: Path, *, port: int | None = None, password: str | None = None) -> Cluster:
    """Initialise ``root`` when new, then start it; reuse the stored password on later runs."""
    import secrets

    pwfile = root / "password"
    if password is None:
        password = pwfile.read_text().strip() if pwfile.exists() else secrets.token_urlsafe(18)
    cluster = Cluster(root=root, port=port or free_port(), password=password)
    if not cluster.is_initialised():
        if root.exists() and any(root.iterdir()):
            shutil.rmtree(root)
        cluster.init()
    elif cluster.is_running():
        cluster.stop()
    cluster.start()
    cluster.wait_ready()
    return cluster
