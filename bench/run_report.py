"""The run report (PDF, CSV, JSON) of the demo's production deployment, timed.

    .venv/bin/python bench/run_report.py [--users 2000] [--runs 3] [--compare-with REV]

Starts its own PostgreSQL cluster, migrates Runway's database, makes the demo's production
target (``devstack.demo``: analyticbot at 0016, seeded with ``--users`` users) and the demo's
cast, then runs the ``production-deployment`` runbook to 0020 for real: its jobs go to a real
Redis broker and are run here, through the job lifecycle, as a worker would (claim, heartbeat,
end): risk report, rehearsal, every check ticked, backup, validation, gates, the lead's
approval, the upgrade, the integrity check, post-deployment. The run has every step, attempt,
approval, the backup and its validation, and its audit events, as the demo's run has.

Then each report through the real view (RequestFactory, a viewer), ``--runs`` times, each in a
fresh process whose peak memory is read from /proc (VmHWM, reset just before the render). With
``--compare-with REV`` (a git revision, e.g. ``HEAD~3``), the same renders run with that
revision's code (``git archive`` into the bench's folder) against the same database: old and new
side by side. Target: the PDF in at most 2 s.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SECONDS = 2.0


def _vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(fmt: str, run_id: int, out: str) -> None:
    """One render of the run's report in this (fresh) process, its figures printed as JSON."""
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.test import RequestFactory

    from runbooks import reports
    from runbooks.models import Run

    run = Run.objects.select_related("database").get(pk=run_id)
    request = RequestFactory().get(f"/runs/{run_id}/report.{fmt}")
    request.user = User.objects.get(username="viewer")
    if fmt == "pdf":
        import weasyprint  # noqa: F401  - imported before the peak is reset, as a warm process has
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    rss_before = _vm_kb("VmRSS")
    profile = os.environ.get("RUNWAY_BENCH_PROFILE")
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    response = reports.run_report(request, run.database.name, run.pk, fmt)
    assert response.status_code == 200, response.status_code
    chunks = getattr(response, "streaming_content", None) or [response.content]
    body = b"".join(chunks)
    seconds = time.perf_counter() - started
    if profile:
        profiler.disable()
        profiler.dump_stats(f"{profile}.{fmt}")
    if out:
        Path(out).write_bytes(body)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "bytes": len(body),
                "rss_before_kb": rss_before,
                "peak_kb": _vm_kb("VmHWM"),
            }
        )
    )


def _run_queued() -> None:
    """Run every queued connection check and step job here, oldest first, through the job
    lifecycle (what a worker does with the broker's message), until none is queued."""
    from dashboard.databases.models import ConnectionCheck
    from dashboard.jobs import lifecycle
    from dashboard.jobs.models import JobState
    from runbooks.models import StepJob

    while True:
        check = ConnectionCheck.objects.filter(state=JobState.QUEUED).order_by("pk").first()
        if check is not None:
            lifecycle.run("connection_check", check.pk)
            continue
        job = (
            StepJob.objects.filter(state=JobState.QUEUED)
            .order_by("step__run", "step__phase_index", "step__position")
            .first()
        )
        if job is None:
            return
        lifecycle.run("run_step", job.pk)


def make_run(cluster: Any, work: Path, users: int) -> int:
    """The demo's production target and cast, and one production deployment run to the end."""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from dashboard.backups.models import BackupPolicy
    from devstack import demo
    from devstack.launcher import TARGET_ROLE
    from runbooks import engine, library
    from runbooks.models import RunState, StepState

    password = (work / "db-secrets" / "analyticbot.password").read_text().strip()
    target = demo.TARGETS[0]
    started = time.perf_counter()
    demo.prepare_target(target, cluster=cluster, user=TARGET_ROLE, password=password, users=users)
    db = demo.register_target(
        target,
        host=cluster.host,
        port=cluster.port,
        user=TARGET_ROLE,
        password_file=work / "db-secrets" / "analyticbot.password",
    )
    BackupPolicy.objects.update_or_create(
        database=db, defaults={"storage_url": f"file://{work / 'backups'}"}
    )
    demo.create_users()
    demo.request_checks()  # its connection check tells its revision
    _run_queued()
    print(f"  target {db.name} seeded with {users:,} users: {time.perf_counter() - started:.0f} s")

    from django.contrib.auth.models import User

    engineer, lead = User.objects.get(username="engineer"), User.objects.get(username="lead")
    started = time.perf_counter()
    run = engine.start_run(engineer, library.get("production-deployment"), db, "0020")
    for _ in range(10):
        run.refresh_from_db()
        if not run.is_active:
            break
        _run_queued()
        run.refresh_from_db()
        if not run.is_active:
            break
        # Newer engines wait for someone to press Deploy after the approval.
        awaits = getattr(engine, "awaits_deploy", None)
        waiting = run.steps.filter(state=StepState.WAITING)
        if awaits and any(awaits(run, s) for s in waiting):
            engine.deploy(lead, run)
            continue
        for step in run.steps.filter(state=StepState.OPEN).order_by("position"):
            run.refresh_from_db()
            if not run.is_active:
                break
            if step.kind == "check":
                engine.tick(engineer, run, step, f"done: {step.title.lower()}")
            elif step.kind == "approval":
                engine.decide(
                    lead, run, step, "approve", "Read the risk report and the rehearsal; go."
                )
    run.refresh_from_db()
    failed = [
        (s.step_id, s.state, s.summary[:200])
        for s in run.steps.exclude(state=StepState.DONE).order_by("phase_index", "position")
    ]
    assert run.state == RunState.COMPLETED, (run.state, run.reason, failed)
    from runbooks.reports import run_events

    print(
        f"  run #{run.pk} completed in {time.perf_counter() - started:.0f} s: "
        f"{run.steps.count()} steps, {run_events(run).count()} audit events, "
        f"backup #{run.backup_id}",
        flush=True,
    )
    return run.pk


def render(env: dict[str, str], tree: Path, fmt: str, run_id: int, out: str = "") -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(tree / "bench" / "run_report.py"), "--child", fmt,
         "--run", str(run_id), "--out", out],
        env=env | {"PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        cwd=tree,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def old_tree(rev: str, work: Path) -> Path:
    """That revision's code, beside this one's virtualenv, with this bench's child in it."""
    tree = work / "old"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    (tree / "bench").mkdir(exist_ok=True)
    shutil.copy(__file__, tree / "bench" / "run_report.py")
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compare-with", default="", metavar="REV")
    parser.add_argument("--keep", action="store_true", help="keep the reports in ./bench-out")
    parser.add_argument("--profile", default="", metavar="FILE", help="cProfile stats to FILE.fmt")
    formats = ["csv", "json", "pdf", "audit.csv"]
    parser.add_argument("--child", choices=formats, help=argparse.SUPPRESS)
    parser.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.run, args.out)
        return

    from devstack import redis_server
    from devstack.cluster import free_port, start_cluster
    from devstack.launcher import TARGET_ROLE

    work = Path(tempfile.mkdtemp(prefix="runway-bench-run-report-"))
    work.chmod(0o755)
    secrets_dir = work / "db-secrets"
    secrets_dir.mkdir(mode=0o700)
    target_password = secrets.token_urlsafe(18)
    (secrets_dir / "analyticbot.password").write_text(target_password)
    cluster = start_cluster(work / "pg")
    redis_port = free_port()
    broker = subprocess.Popen(
        redis_server.command(redis_port), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        cluster.create_database("runway")
        cluster.create_role(TARGET_ROLE, target_password)
        cluster.execute(f"ALTER ROLE {TARGET_ROLE} CREATEDB")
        cluster.execute(f"GRANT pg_read_all_settings, pg_read_all_stats TO {TARGET_ROLE}")
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DATABASE_URL": cluster.url("runway"),
            "RUNWAY_SECRET_KEY": secrets.token_urlsafe(50),
            "RUNWAY_ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
            "RUNWAY_LOG_LEVEL": "WARNING",
            "RUNWAY_BACKUP_STORAGE": f"file://{work / 'backups'}",
            "RUNWAY_BACKUP_PASSPHRASE": secrets.token_urlsafe(18),
            "RUNWAY_SECRETS_DIR": str(secrets_dir),
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        }
        if args.profile:
            env["RUNWAY_BENCH_PROFILE"] = str(Path(args.profile).resolve())
        os.environ.update(env)
        print("Building the demo's production deployment run ...", flush=True)
        run_id = make_run(cluster, work, args.users)
        trees = {"new": ROOT}
        if args.compare_with:
            trees = {f"old ({args.compare_with})": old_tree(args.compare_with, work)} | trees
        keep = ROOT / "bench-out" if args.keep else work
        keep.mkdir(exist_ok=True)
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for fmt in ("pdf", "csv", "audit.csv", "json"):
            for label, tree in trees.items():
                runs = []
                for n in range(args.runs if fmt == "pdf" else 1):
                    out = str(keep / f"run-report-{label.split()[0]}.{fmt}") if n == 0 else ""
                    try:
                        runs.append(render(env, tree, fmt, run_id, out))
                    except RuntimeError as exc:
                        print(f"  {label} {fmt}: failed: {str(exc).splitlines()[-1]}")
                        break
                    r = runs[-1]
                    print(
                        f"  {label:18} {fmt:5} {r['seconds']:6.2f} s  {r['bytes'] / 1e3:7.0f} kB  "
                        f"peak RSS {r['peak_kb'] / 1024:5.0f} MB "
                        f"(+{(r['peak_kb'] - r['rss_before_kb']) / 1024:.0f})",
                        flush=True,
                    )
                results[(label, fmt)] = runs
        print()
        print(f"run #{run_id}, the median of {args.runs} fresh processes for the PDF:")
        print(f"{'':26} {'seconds':>8} {'peak RSS':>10} {'growth':>9}")
        for (label, fmt), runs in results.items():
            if not runs:
                continue
            seconds = statistics.median(r["seconds"] for r in runs)
            peak = statistics.median(r["peak_kb"] for r in runs) / 1024
            growth = statistics.median(r["peak_kb"] - r["rss_before_kb"] for r in runs) / 1024
            verdict = ""
            if fmt == "pdf":
                verdict = "  within" if seconds <= TARGET_SECONDS else "  OVER"
                verdict += f" the {TARGET_SECONDS:g} s target"
            print(
                f"{label + ' ' + fmt:26} {seconds:8.2f} {peak:8.0f} MB {growth:+7.0f} MB{verdict}"
            )
        if args.keep:
            print(f"reports kept in {keep}")
    finally:
        broker.terminate()
        broker.wait(timeout=10)
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
