"""Backups measured side by side: Runway's pipeline against bare pg_dump and the seed's script.

    .venv/bin/python bench/backup.py [--users 2000000] [--small-users N] [--runs 3]

Starts its own PostgreSQL cluster and S3 endpoint (moto's server, in its own process), seeds the
analytics bot schema (``--users``, about 1.2 kB per user in all tables), then alternates, round by
round (median of ``--runs``):

- Runway: a backup job (``jobs.run("backup", id)``) to the S3 endpoint (pg_dump -Fc -Z0 |
  zstd -T0 -1 | gpg AES256 -> multipart upload; row counts in the dump's snapshot), in a fresh
  process whose peak memory is read from /proc (VmHWM). The S3 endpoint shares the machine's
  cores: its own CPU time per backup is printed. For scale, the same backup to a local folder too;
- the floor: bare ``pg_dump -Fc -Z0 > /dev/null``;
- the seed's script: ``pg_dump | gzip -6 | gpg --symmetric --cipher-algo AES256 > /dev/null``
  (plain format, gpg's default compression, as its backup-system.sh; no upload, which favours it).

Then validation: Runway's validation job (fetch, decrypt, zstd -d, pg_restore into a
scratch database, integrity queries, drop) against a bare ``pg_restore`` of the same dump (already
decrypted and decompressed on disk) into a new database plus the same queries, then drop.

Last, Runway's peak memory backing up a database ``--small-users`` big (default a tenth): it should
not grow with the database.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PASSPHRASE = "bench passphrase, not a secret"
PASSWORD_ENV = "RUNWAY_BENCH_PG_PASSWORD"


def vm_hwm_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def child_backup(backup_id: int) -> None:
    """Run in a fresh process: take one backup, print its figures as JSON."""
    import django

    django.setup()
    from dashboard.backups.models import Backup
    from dashboard.jobs import lifecycle as jobs

    started = time.perf_counter()
    backup = jobs.run("backup", backup_id)
    elapsed = time.perf_counter() - started
    assert isinstance(backup, Backup) and backup.completed, backup and backup.error
    print(json.dumps({"seconds": elapsed, "size": backup.size_bytes, "vm_hwm_kb": vm_hwm_kb()}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def sh(command: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command!r} failed: {done.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--small-users", type=int, default=0, help="default: --users / 10")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child-backup", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_backup:
        child_backup(args.child_backup)
        return
    small_users = args.small_users or max(args.users // 10, 1000)

    from devstack.cluster import start_cluster

    work = Path(tempfile.mkdtemp(prefix="runway-bench-backup-"))
    work.chmod(0o755)
    cluster = start_cluster(work / "pg")
    moto = None
    try:
        moto_port = free_port()
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DATABASE_URL": cluster.url("runway"),
            "RUNWAY_BACKUP_PASSPHRASE": PASSPHRASE,
            "RUNWAY_BACKUP_STORAGE": "s3://bench/runway",
            "RUNWAY_S3_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
            "RUNWAY_S3_ACCESS_KEY_ID": "bench",
            "RUNWAY_S3_SECRET_ACCESS_KEY": "bench-secret",
            "RUNWAY_SCRATCH_DSN": f"host={cluster.host} port={cluster.port} dbname=postgres "
            "user=postgres",
            "RUNWAY_SCRATCH_PASSWORD_REF": f"env:{PASSWORD_ENV}",
            PASSWORD_ENV: cluster.password,
            "RUNWAY_LOG_LEVEL": "WARNING",
        }
        os.environ.update(env)
        run_bench(args, small_users, cluster, work, env, moto.pid)
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(20)
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def seed_target(cluster: object, name: str, users: int) -> float:
    import psycopg

    from devstack.seeding import seed

    cluster.create_database(name, replace=True)  # type: ignore[attr-defined]
    subprocess.run(
        [
            str(Path(sys.executable).parent / "alembic"),
            "-c",
            str(ROOT / "migrations_target" / "alembic.ini"),
            "-x",
            f"url={cluster.url(name)}",  # type: ignore[attr-defined]
            "upgrade",
            "0016",
        ],
        check=True,
        capture_output=True,
    )
    started = time.perf_counter()
    with psycopg.connect(cluster.dsn(name)) as conn:  # type: ignore[attr-defined]
        seed(conn, users=users)
    seconds = time.perf_counter() - started
    # Set hint bits and freeze now: otherwise the first dump pays for it, and autovacuum of the
    # fresh tables runs under whichever measurement comes next.
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute("VACUUM (FREEZE, ANALYZE)")
        conn.execute("CHECKPOINT")
    return seconds


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_bench(
    args: argparse.Namespace,
    small_users: int,
    cluster: object,
    work: Path,
    env: dict[str, str],
    moto_pid: int,
) -> None:
    import django
    import psycopg

    django.setup()
    from django.core.management import call_command

    cluster.create_database("runway")  # type: ignore[attr-defined]
    call_command("migrate", verbosity=0)

    from dashboard.backups import pipeline, validation
    from dashboard.backups.models import Backup, BackupPolicy, Validation
    from dashboard.databases.models import ManagedDatabase
    from dashboard.jobs import lifecycle as jobs
    from dashboard.lib import pg, s3

    s3.client().create_bucket(Bucket="bench")
    print(f"Seeding {args.users:,} users and {small_users:,} users ...", flush=True)
    seconds = seed_target(cluster, "big", args.users)
    seed_target(cluster, "small", small_users)
    with psycopg.connect(cluster.dsn("big")) as conn:
        size = conn.execute("SELECT pg_database_size('big')").fetchone()[0]  # type: ignore[index]
        version = conn.info.server_version
    print(f"  seeded in {seconds:.0f} s; database 'big' is {size / 1e9:.2f} GB")

    def managed(name: str, dbname: str) -> ManagedDatabase:
        return ManagedDatabase.objects.create(
            name=name,
            environment="production",
            dsn=f"host={cluster.host} port={cluster.port} dbname={dbname} user=postgres",  # type: ignore[attr-defined]
            password_ref=f"env:{PASSWORD_ENV}",
            script_location="migrations_target",
            critical_tables=["users", "payments"],
        )

    big, small = managed("big", "big"), managed("small", "small")
    big_local = managed("big-local", "big")
    BackupPolicy.objects.create(database=big_local, storage_url=f"file://{work / 'store'}")
    conninfo = pg.tool_conninfo(big.dsn)
    pg_dump = pg.client_tool("pg_dump", version)
    tool_env = {**pg.tool_env(cluster.password), "PATH": os.environ["PATH"]}  # type: ignore[attr-defined]
    gnupg = work / "seed-gnupg"
    gnupg.mkdir(mode=0o700)
    (work / "passphrase").write_text(PASSPHRASE + "\n")
    seed_env = {**tool_env, "GNUPGHOME": str(gnupg)}

    def runway_backup(db: ManagedDatabase) -> dict[str, float]:
        backup = pipeline.request_backup(None, db, reason="bench", enqueue=False)
        done = subprocess.run(
            [sys.executable, __file__, "--child-backup", str(backup.pk)],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["id"] = backup.pk
        return result

    floor_cmd = f"{pg_dump} -Fc -Z0 --dbname '{conninfo}' > /dev/null"
    seed_cmd = (
        f"{pg_dump} --dbname '{conninfo}' | gzip -6 | gpg --batch --yes --pinentry-mode loopback "
        f"--passphrase-file {work / 'passphrase'} --symmetric --cipher-algo AES256 > /dev/null"
    )
    runway_s: list[float] = []
    local_s: list[float] = []
    s3_cpu: list[float] = []
    floor_s: list[float] = []
    seed_s: list[float] = []
    hwm_big: list[int] = []
    last: dict[str, float] = {}
    for round_ in range(1, args.runs + 1):
        before = cpu_seconds(moto_pid)
        last = runway_backup(big)
        s3_cpu.append(cpu_seconds(moto_pid) - before)
        runway_s.append(last["seconds"])
        hwm_big.append(int(last["vm_hwm_kb"]))
        local_s.append(runway_backup(big_local)["seconds"])
        shutil.rmtree(work / "store")
        floor_s.append(timed(lambda: sh(floor_cmd, tool_env)))
        seed_s.append(timed(lambda: sh(seed_cmd, seed_env)))
        print(
            f"  round {round_}: runway to S3 {runway_s[-1]:.1f} s ({last['size'] / 1e6:.0f} MB "
            f"stored; the S3 server used {s3_cpu[-1]:.1f} CPU-s), to a folder {local_s[-1]:.1f} s, "
            f"pg_dump floor {floor_s[-1]:.1f} s, seed's script {seed_s[-1]:.1f} s",
            flush=True,
        )
    subprocess.run(["gpgconf", "--homedir", str(gnupg), "--kill", "gpg-agent"], check=False)

    # Validation: Runway's against bare pg_restore of the same dump plus the same queries.
    backup = Backup.objects.get(pk=int(last["id"]))
    dump = work / "same.dump"
    from dashboard.lib import storage

    # The same dump: the stored object, opened with stock tools into a plain archive on disk.

    with storage.open_read(backup.storage_url) as body, (work / "same.gpg").open("wb") as out:
        shutil.copyfileobj(body, out, 1 << 20)
    sh(
        f"gpg --batch --pinentry-mode loopback --passphrase-file {work / 'passphrase'} "
        f"--decrypt {work / 'same.gpg'} | zstd -d -q > {dump}",
        seed_env,
    )
    (work / "same.gpg").unlink()
    pg_restore = pg.client_tool("pg_restore", version)
    admin = cluster.dsn()  # type: ignore[attr-defined]

    def bare_restore() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bare_restore TEMPLATE template0")
        target = pg.tool_conninfo(big.dsn, dbname="bare_restore")
        sh(f"{pg_restore} --no-owner --no-privileges --dbname '{target}' {dump}", tool_env)
        with psycopg.connect(cluster.dsn("bare_restore"), autocommit=True) as conn:  # type: ignore[attr-defined]
            checks = validation.integrity_checks(conn, backup)
        assert all(c["ok"] for c in checks), checks
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE bare_restore WITH (FORCE)")

    def runway_validation() -> None:
        requested = validation.request_validation(None, backup, enqueue=False)
        proof = jobs.run("validation", requested.pk)
        assert isinstance(proof, Validation) and proof.outcome == "passed", proof and proof.error

    validate_s: list[float] = []
    bare_s: list[float] = []
    for round_ in range(1, args.runs + 1):
        validate_s.append(timed(runway_validation))
        bare_s.append(timed(bare_restore))
        print(
            f"  round {round_}: runway validation {validate_s[-1]:.1f} s, "
            f"bare pg_restore + queries {bare_s[-1]:.1f} s",
            flush=True,
        )
    dump_mb = dump.stat().st_size / 1e6
    dump.unlink()

    small_result = runway_backup(small)

    runway, floor, seed_ = (statistics.median(x) for x in (runway_s, floor_s, seed_s))
    local = statistics.median(local_s)
    valid, bare = statistics.median(validate_s), statistics.median(bare_s)
    print()
    print(f"database: {args.users:,} users, {size / 1e9:.2f} GB on disk, dump {dump_mb:.0f} MB")
    print(f"stored object: {last['size'] / 1e6:.0f} MB (zstd -1, AES256)")
    print(f"{'median of ' + str(args.runs):40} {'seconds':>8}")
    print(f"{'Runway backup to S3':40} {runway:8.1f}")
    print(f"{'  the S3 server (moto) meanwhile, CPU-s':40} {statistics.median(s3_cpu):8.1f}")
    print(f"{'Runway backup to a local folder':40} {local:8.1f}")
    print(f"{'bare pg_dump -Fc -Z0 > /dev/null':40} {floor:8.1f}")
    print(f"{'seed: pg_dump | gzip -6 | gpg':40} {seed_:8.1f}")
    print(f"Runway / floor: {runway / floor:.2f}x (target <= 1.5x)")
    print(f"Runway to a folder / floor: {local / floor:.2f}x")
    print(f"seed / Runway:  {seed_ / runway:.2f}x faster (target >= 3.5x)")
    print(f"{'Runway validation (restore + queries)':40} {valid:8.1f}")
    print(f"{'bare pg_restore + the same queries':40} {bare:8.1f}")
    print(f"Runway validation / bare: {valid / bare:.2f}x (target <= 1.3x)")
    print(
        f"peak RSS of the backing-up process: {max(hwm_big) / 1024:.0f} MB at {args.users:,} "
        f"users, {small_result['vm_hwm_kb'] / 1024:.0f} MB at {small_users:,} users"
    )


if __name__ == "__main__":
    main()
