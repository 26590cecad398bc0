"""Audit exports and the audit page at a million events, measured side by side.

    .venv/bin/python bench/audit_export.py [--events 1000000] [--page-runs 15]

A quick run (a few minutes): ``--events 20000 --page-runs 3``; the PDF lists the first 1,000
events (RUNWAY_PDF_MAX_EVENTS) either way.

Starts its own PostgreSQL cluster, migrates Runway's database and fills the audit table with
``--events`` real chained events spread over 1,000 days (hashes by ``chain.compute_hash``,
loaded with COPY; ``verify()`` proves the chain). Then, each export in a fresh process whose
peak memory is read from /proc (VmHWM, reset just before the export):

- CSV and JSON exports of the whole trail through the real views (RequestFactory, a viewer, the
  streaming response consumed to the end), against the floor: psycopg
  ``COPY (SELECT ... ORDER BY id) TO STDOUT (FORMAT csv)`` of the same rows;
- the same exports of a period holding a tenth of the events: the peak must not grow with rows;
- ``tools/verify_audit_export.py`` on the million-event JSON file (stdlib, outside Runway);
- the PDF report (the first RUNWAY_PDF_MAX_EVENTS events, each checked against its predecessor).

Last, the audit page's latency through the Django test client (median of ``--page-runs``):
first page, a deep page, a filtered page, a period, against the log-in page as a trivial view;
and the query work of the old ``Paginator`` (COUNT(*) + OFFSET) against the keyset pages.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DAYS = 1000
START = datetime(2024, 1, 1, tzinfo=UTC)
ACTORS = [f"user{i:02d}" for i in range(20)] + ["system"]
ACTIONS = [
    ("user.logged_in", "user"),
    ("database.registered", "manageddatabase"),
    ("backup.requested", "backup"),
    ("backup.completed", "backup"),
    ("backup.validated", "backup"),
    ("run.started", "run"),
    ("run.approved", "run"),
    ("step.checked", "step"),
    ("trigger.fired", "trigger"),
]
COLUMNS = (
    "id, created_at, actor_id, actor_name, action, object_type, object_id, object_repr, details, "
    "details_json, prev_hash, hash"
)


# --- In a fresh process: one export, its figures printed as JSON ---


def _vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+).
    Path("/proc/self/clear_refs").write_text("5")


def child(kind: str, query: str, out: str) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.http import QueryDict
    from django.test import RequestFactory

    from dashboard.overview import views

    user = User.objects.get(username="bench-viewer")
    request = RequestFactory().get("/audit/export", QueryDict(query))
    request.user = user
    sink = open(out, "wb") if out else open(os.devnull, "wb")  # noqa: SIM115
    if kind == "pdf":
        import weasyprint  # noqa: F401  - imported before the peak is reset, as a warm process has

    _reset_peak()
    rss_before = _vm_kb("VmRSS")
    started = time.perf_counter()
    size = 0
    if kind == "copy":
        import psycopg

        db = settings.DATABASES["default"]
        with (
            psycopg.connect(
                host=str(db["HOST"]), port=str(db["PORT"]), user=str(db["USER"]),
                password=str(db["PASSWORD"]), dbname=str(db["NAME"]),
            ) as conn,
            conn.cursor() as cursor,
            cursor.copy(
                f"COPY (SELECT {COLUMNS} FROM audit_auditevent ORDER BY id) "
                "TO STDOUT (FORMAT csv, HEADER)"
            ) as copy,
        ):  # fmt: skip
            for data in copy:
                size += len(data)
                sink.write(data)
    else:
        view = {
            "csv": views.audit_export_csv,
            "json": views.audit_export_json,
            "pdf": views.audit_export_pdf,
        }[kind]
        response = view(request)
        assert response.status_code == 200, response.status_code
        chunks = getattr(response, "streaming_content", None) or [response.content]
        for chunk in chunks:
            size += len(chunk)
            sink.write(chunk)
        response.close()
    seconds = time.perf_counter() - started
    sink.close()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "bytes": size,
                "rss_before_kb": rss_before,
                "peak_kb": _vm_kb("VmHWM"),
            }
        )
    )


# --- The bench ---


def fill(cluster: Any, count: int) -> dict[str, float]:
    """``count`` chained events, one every 1,000 days / count, loaded with COPY."""
    import psycopg

    from dashboard.audit.chain import GENESIS, canonical_details, compute_hash
    from dashboard.audit.models import AuditEvent

    step = timedelta(days=DAYS) / count
    prev = GENESIS
    started = time.perf_counter()
    hashing = 0.0
    with psycopg.connect(cluster.dsn("runway")) as conn, conn.cursor() as cursor:
        with cursor.copy(f"COPY audit_auditevent ({COLUMNS}) FROM STDIN") as copy:
            for i in range(1, count + 1):
                action, object_type = ACTIONS[i % len(ACTIONS)]
                actor = ACTORS[i % len(ACTORS)]
                details: dict[str, Any] = {"n": i, "note": f"bench event {i}"}
                if i % 7 == 0:
                    details["comment"] = "approuvé après revue ✓"
                t0 = time.perf_counter()
                event = AuditEvent(
                    id=i,
                    created_at=START + step * i,
                    actor_id=None if actor == "system" else i % 20 + 1,
                    actor_name=actor,
                    action=action,
                    object_type=object_type,
                    object_id=str(i % 500),
                    object_repr=f"analyticbot-{i % 500}",
                    details=details,
                    prev_hash=prev,
                )
                event.hash = prev = compute_hash(event)
                hashing += time.perf_counter() - t0
                copy.write_row(
                    (
                        event.pk, event.created_at, event.actor_id, event.actor_name,
                        event.action, event.object_type, event.object_id, event.object_repr,
                        json.dumps(details), canonical_details(details), event.prev_hash,
                        event.hash,
                    )
                )  # fmt: skip
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('audit_auditevent', 'id'), %s)", (count,)
        )
    total = time.perf_counter() - started
    with psycopg.connect(cluster.dsn("runway"), autocommit=True) as conn:
        conn.execute("VACUUM (FREEZE, ANALYZE) audit_auditevent")
        conn.execute("CHECKPOINT")
        row = conn.execute("SELECT pg_total_relation_size('audit_auditevent')").fetchone()
    return {"seconds": total, "hashing": hashing, "table_bytes": float(row[0] if row else 0)}


def run_child(env: dict[str, str], kind: str, query: str = "", out: str = "") -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--query", query, "--out", out],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def growth_mb(result: dict[str, Any]) -> float:
    """How far the process's peak RSS rose above its RSS when the export started."""
    return float(result["peak_kb"] - result["rss_before_kb"]) / 1024


def median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--page-runs", type=int, default=15)
    parser.add_argument("--child", choices=["csv", "json", "copy", "pdf"], help=argparse.SUPPRESS)
    parser.add_argument("--query", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.query, args.out)
        return

    from devstack.cluster import start_cluster

    work = Path(tempfile.mkdtemp(prefix="runway-bench-audit-"))
    work.chmod(0o755)
    cluster = start_cluster(work / "pg")
    try:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DATABASE_URL": cluster.url("runway"),
            "RUNWAY_ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
            "RUNWAY_LOG_LEVEL": "WARNING",
            # DEBUG is off: the page latency's test client signs sessions with a real key.
            "RUNWAY_SECRET_KEY": os.environ.get("RUNWAY_SECRET_KEY") or secrets.token_urlsafe(50),
        }
        os.environ.update(env)
        run_bench(args, cluster, work, env)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_bench(args: argparse.Namespace, cluster: Any, work: Path, env: dict[str, str]) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command

    cluster.create_database("runway")
    call_command("migrate", verbosity=0)

    from dashboard.accounts.roles import Role, grant
    from dashboard.audit.chain import verify

    count = args.events
    print(f"Filling the audit trail with {count:,} chained events ...", flush=True)
    filled = fill(cluster, count)
    print(
        f"  {filled['seconds']:.0f} s ({filled['hashing']:.0f} s of it hashing in Python); "
        f"table and indexes {filled['table_bytes'] / 1e6:.0f} MB",
        flush=True,
    )
    started = time.perf_counter()
    verdict = verify()
    verify_s = time.perf_counter() - started
    assert verdict.ok and verdict.checked == count, verdict
    print(f"  verify() of the chain: {verify_s:.1f} s", flush=True)
    grant(User.objects.create_user("bench-viewer", password="bench-password"), Role.VIEWER)

    last_day = (START + timedelta(days=DAYS)).date()
    tenth = f"since={last_day - timedelta(days=DAYS // 10)}&until={last_day}"
    results: dict[str, dict[str, Any]] = {}
    json_file = work / "export.json"
    for label, kind, query, out in [
        ("csv", "csv", "", ""),
        ("json", "json", "", str(json_file)),
        ("copy", "copy", "", ""),
        ("csv-tenth", "csv", tenth, ""),
        ("json-tenth", "json", tenth, ""),
        ("pdf", "pdf", "", ""),
    ]:
        results[label] = run_child(env, kind, query, out)
        r = results[label]
        print(
            f"  {label:11} {r['seconds']:7.1f} s  {r['bytes'] / 1e6:7.0f} MB  "
            f"peak RSS {r['peak_kb'] / 1024:5.0f} MB (+{growth_mb(r):.0f})",
            flush=True,
        )

    started = time.perf_counter()
    verifier = subprocess.run(
        ["/usr/bin/time", "-f", "%M", sys.executable, str(ROOT / "tools/verify_audit_export.py"),
         str(json_file)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    verifier_s = time.perf_counter() - started
    assert verifier.returncode == 0, verifier.stdout + verifier.stderr
    verifier_kb = int(verifier.stderr.strip().splitlines()[-1])
    print(f"  verifier: {verifier.stdout.splitlines()[0]}", flush=True)
    json_file.unlink()

    first_tenth = f"since={START.date()}&until={START.date() + timedelta(days=DAYS // 10 - 1)}"
    page = page_latency(args.page_runs, tenth, first_tenth)

    def row(label: str, key: str) -> str:
        r = results[key]
        growth = growth_mb(r)
        rows = {"pdf": min(count, pdf_max), "csv-tenth": count // 10, "json-tenth": count // 10}
        rate = rows.get(key, count) / r["seconds"]
        return (
            f"{label:46} {r['seconds']:8.1f} {rate:8,.0f}/s {r['bytes'] / 1e6:8.0f} MB "
            f"{r['peak_kb'] / 1024:7.0f} MB {growth:+7.0f} MB"
        )

    copy_s = results["copy"]["seconds"]
    pdf_max = settings.RUNWAY_PDF_MAX_EVENTS
    print()
    print(f"audit trail: {count:,} events; the period: {count // 10:,} events ({tenth})")
    print(f"{'':46} {'seconds':>8} {'events':>10} {'output':>11} {'peak RSS':>10} {'growth':>10}")
    print(row("CSV export, whole trail (view, streamed)", "csv"))
    print(row("JSON export, whole trail (view, streamed)", "json"))
    print(row("floor: COPY ... TO STDOUT (FORMAT csv)", "copy"))
    print(row("CSV export, the period (a tenth)", "csv-tenth"))
    print(row("JSON export, the period (a tenth)", "json-tenth"))
    print(row(f"PDF report ({pdf_max:,} events, each checked)", "pdf"))
    csv_x, json_x = results["csv"]["seconds"] / copy_s, results["json"]["seconds"] / copy_s
    print(f"CSV / COPY: {csv_x:.1f}x   JSON / COPY: {json_x:.1f}x   (target: within 5x)")
    pdf = results["pdf"]
    print(
        f"PDF of {min(count, pdf_max):,} events: {pdf['seconds']:.1f} s (target 3 s), "
        f"peak RSS {pdf['peak_kb'] / 1024:.0f} MB (target under 150 MB)"
    )
    for kind in ("csv", "json"):
        small, big = results[f"{kind}-tenth"], results[kind]
        print(
            f"{kind.upper()} peak RSS growth: {growth_mb(small):.0f} MB at {count // 10:,} events, "
            f"{growth_mb(big):.0f} MB at {count:,}"
        )
    print(
        f"verify() of the whole chain in Runway: {verify_s:.1f} s (manage.py verify_audit; the "
        "PDF only checks the events it lists against their predecessors)"
    )
    print(
        f"tools/verify_audit_export.py on the {results['json']['bytes'] / 1e6:.0f} MB JSON: "
        f"{verifier_s:.1f} s, peak RSS {verifier_kb / 1024:.0f} MB"
    )
    print()
    print(f"audit page at {count:,} events, median of {args.page_runs}:")
    for label, ms in page:
        print(f"  {label:58} {ms:8.1f} ms")


def page_latency(runs: int, tenth: str, first_tenth: str) -> list[tuple[str, float]]:
    from django.contrib.auth.models import User
    from django.core.paginator import Paginator
    from django.test import Client
    from django.urls import reverse

    from dashboard.audit import reports
    from dashboard.audit.models import AuditEvent

    client = Client()
    client.force_login(User.objects.get(username="bench-viewer"))
    url = reverse("audit-events")

    def get(path: str, query: str = "") -> Callable[[], None]:
        def fetch() -> None:
            response = client.get(f"{path}?{query}" if query else path)
            assert response.status_code == 200, response.status_code

        return fetch

    def old(number: int | str) -> Callable[[], None]:
        def fetch() -> None:
            page = Paginator(AuditEvent.objects.all(), 50).get_page(number)
            list(page)
            assert page.paginator.count

        return fetch

    def keyset(before: int | None) -> Callable[[], None]:
        def fetch() -> None:
            reports.page_of(AuditEvent.objects.all(), before=before, size=50)

        return fetch

    return [
        ("trivial view: the log-in page", median_ms(get(reverse("login")), runs)),
        ("audit page, first page", median_ms(get(url), runs)),
        ("audit page, a deep page (?before=1000)", median_ms(get(url, "before=1000"), runs)),
        ("audit page, filtered by actor and action prefix", median_ms(
            get(url, "actor=user07&action=backup."), runs)),
        ("audit page, a filter nothing matches (reads every row)", median_ms(
            get(url, "actor=nobody"), runs)),
        ("audit page, a period: the newest tenth", median_ms(get(url, tenth), runs)),
        ("audit page, a period: the oldest tenth", median_ms(get(url, first_tenth), runs)),
        ("  queries only: old Paginator page 1 (COUNT(*) + LIMIT)", median_ms(old(1), runs)),
        ("  queries only: old Paginator last page (COUNT + OFFSET)", median_ms(old("last"), runs)),
        ("  queries only: keyset page 1", median_ms(keyset(None), runs)),
        ("  queries only: keyset deep page", median_ms(keyset(1000), runs)),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
