"""The Celery app against a Redis that wants a password (and TLS), as production runs it: a real
redis-server, a real worker; neither the broker's password nor the database's reaches the log."""

from __future__ import annotations

import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import ROOT, wait_until

from devstack import redis_server
from devstack.cluster import free_port


def start_redis(args: list[str], url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def answers() -> bool:
        try:
            return bool(redis.Redis.from_url(url).ping())
        except redis.ConnectionError:
            return proc.poll() is not None

    wait_until(answers, "redis-server")
    assert proc.poll() is None, log.read_text()
    return proc


def run_worker_until_ready(env: dict[str, str], log: Path) -> str:
    """Start ``celery -A dashboard worker`` as the celery_worker fixture does; return its log."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "--pool", "solo"]
            + ["--concurrency", "1", "--loglevel", "DEBUG", "-Q", "broker-secret-test"]
            + ["--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "ready." in log.read_text() or proc.poll() is not None, "worker")
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        proc.terminate()
        proc.wait(20)
    return log.read_text()


@pytest.fixture
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="runway-broker-") as name:
        yield Path(name)


def test_a_worker_never_logs_the_broker_password(worker_env, folder, pg_cluster):
    password = "broker-" + secrets.token_hex(12)
    port = free_port()
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    server = start_redis(
        [*redis_server.command(port), "--requirepass", password], url, folder / "redis.log"
    )
    try:
        log = run_worker_until_ready({**worker_env, "CELERY_BROKER_URL": url}, folder / "w.log")
    finally:
        server.terminate()
        server.wait(10)

    assert f"redis://:**@127.0.0.1:{port}/0" in log  # the banner names the broker, masked
    assert password not in log
    assert pg_cluster.password not in log  # DATABASE_URL's password neither


def make_certificates(folder: Path) -> Path:
    """A throwaway CA, and a certificate for 127.0.0.1 it signed; returns the CA's file."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    key = ["-newkey", "rsa:2048", "-nodes", "-days", "1"]
    openssl("req", "-x509", *key, "-subj", "/CN=ca", "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", *key, "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        *["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key"],
        *["-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.crt"],
    )
    return folder / "ca.crt"


def test_a_worker_reaches_redis_over_tls_with_a_password(worker_env, folder):
    ca = make_certificates(folder)
    password = "broker-" + secrets.token_hex(12)
    port = free_port()
    # The README's production URL: TLS, the server's certificate verified, a password.
    url = f"rediss://:{password}@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
    server = start_redis(
        [*redis_server.command(0), "--tls-port", str(port), "--requirepass", password]
        + ["--tls-cert-file", str(folder / "server.crt"), "--tls-key-file"]
        + [str(folder / "server.key"), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"],
        url,
        folder / "redis.log",
    )
    try:
        log = run_worker_until_ready({**worker_env, "CELERY_BROKER_URL": url}, folder / "w.log")
    finally:
        server.terminate()
        server.wait(10)

    assert f"rediss://:**@127.0.0.1:{port}/0" in log
    assert password not in log
