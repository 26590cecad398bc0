"""What data-loss detection costs: a snapshot of the critical tables before a run and the
comparison after it, in each mode, beside a bare ``count(*)`` of the same tables.

    .venv/bin/python bench/snapshots.py [--users 2000000] [--cluster DIR] [--runs 3]
                                        [--tables users,channels,payments]

On a private PostgreSQL cluster, the seed schema (``migrations_target`` at 0016) seeded with
``--users`` users (timed; or, with ``--cluster DIR``, the database bench/stalls.py seeded there
with the same ``--users``, reused). For each mode (count, sampled, full) and each run: the
snapshot (``snapshot.take``, one REPEATABLE READ transaction over all the tables) and the
comparison with nothing changed (``snapshot.compare``). Beside them, in the same run: exact
``count(*)`` of the tables, ``md5(string_agg(row::text))`` of payments and a sum of row hashes of
payments (the anchors of the issue: 0.5 s, 3.0 s and 0.9 s). Medians of ``--runs``, warm cache
(one untimed pass first). Target: at most 2 s per snapshot in the default mode (sampled).
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from dashboard.lib import pg  # noqa: E402
from dashboard.schema import snapshot  # noqa: E402
from devstack.cluster import start_cluster  # noqa: E402

APP_ROLE, DBNAME = "app_owner", "app"  # bench/stalls.py's, so its seeded cluster is reused


def say(text: str) -> None:
    print(text, flush=True)


def timed(fn: Callable[[], object], runs: int) -> tuple[float, object]:
    fn()  # warm
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--cluster", type=Path, help="reuse (or keep) the seeded cluster here")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tables", default="users,channels,payments")
    args = parser.parse_args()
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]

    root = args.cluster.resolve() if args.cluster else Path(tempfile.mkdtemp()) / "pg"
    cluster = start_cluster(root)
    try:
        pwfile = root / "app-password"
        if not pwfile.exists():
            pwfile.write_text(secrets.token_urlsafe(18))
        password = pwfile.read_text().strip()
        cluster.create_role(APP_ROLE, password)
        marker = root / "seeded-users"
        if marker.exists() and marker.read_text().strip() == str(args.users):
            say(f"reusing the database seeded with {args.users:,} users in {root}")
        else:
            from devstack.seeding import seed

            cluster.create_database(DBNAME, owner=APP_ROLE, replace=True)
            url = cluster.url(DBNAME, APP_ROLE, password)
            subprocess.run(
                [str(Path(sys.executable).parent / "alembic"), "-c"]
                + [str(ROOT / "migrations_target" / "alembic.ini"), "-x", f"url={url}"]
                + ["upgrade", "0016"],
                check=True,
                capture_output=True,
            )
            started = time.monotonic()
            dsn = f"host={cluster.host} port={cluster.port} dbname={DBNAME} user={APP_ROLE}"
            with psycopg.connect(dsn, password=password) as conn:
                seed(conn, users=args.users)
            say(f"seeded {args.users:,} users in {time.monotonic() - started:.0f} s")
            marker.write_text(str(args.users))
        dsn = f"host={cluster.host} port={cluster.port} dbname={DBNAME} user={APP_ROLE}"
        with pg.connect(dsn, password) as conn:
            conn.execute("VACUUM ANALYZE")
            size = conn.execute(f"SELECT pg_database_size('{DBNAME}')").fetchone()
            rows = {t: pg.count_rows(conn, t) for t in tables}
            assert size is not None
            say(
                f"database {size[0] / 2**30:.2f} GB; "
                + ", ".join(f"{t} {n:,} rows" for t, n in rows.items())
                + f"; medians of {args.runs} runs, warm"
            )

            count_s, _ = timed(lambda: [pg.count_rows(conn, t) for t in tables], args.runs)
            md5_s, _ = timed(
                lambda: conn.execute(
                    "SELECT md5(string_agg(p::text, '' ORDER BY id)) FROM payments p"
                ).fetchone(),
                args.runs,
            )
            sum_s, _ = timed(
                lambda: conn.execute(
                    "SELECT sum(hashtextextended(p::text, 0)) FROM payments p"
                ).fetchone(),
                args.runs,
            )
            say(f"  bare count(*) of {', '.join(tables)}: {count_s:.2f} s")
            say(f"  md5 of payments (ordered string_agg): {md5_s:.2f} s")
            say(f"  sum of row hashes of payments: {sum_s:.2f} s")
            say("")
            say(
                f"  {'mode':8} {'snapshot':>9} {'compare':>9} {'vs count':>9}  per table (snapshot)"
            )
            for mode in ("count", "sampled", "full"):
                modes = dict.fromkeys(tables, mode)
                take_s, snaps = timed(lambda m=modes: snapshot.take(conn, tables, m), args.runs)
                assert isinstance(snaps, list)
                compare_s, result = timed(lambda s=snaps: snapshot.compare(conn, s), args.runs)
                assert isinstance(result, snapshot.Comparison) and result.lossless
                per = ", ".join(f"{s.table} {s.seconds:.2f}" for s in snaps)
                sampled = sum(len(s.sample) for s in snaps)
                extra = f"; {sampled:,} sampled rows" if sampled else ""
                say(
                    f"  {mode:8} {take_s:8.2f}s {compare_s:8.2f}s {take_s / count_s:8.1f}x  "
                    f"{per}{extra}"
                )
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
