"""How long from a condition arising to the rollback starting, on the demo's stack: a real
Celery worker and beat (ticking the triggers every RUNWAY_TRIGGER_SECONDS), Redis, PostgreSQL.

    .venv/bin/python bench/trigger_latency.py [--runs 3] [--users 300]

The demo stack starts in a temporary home (devstack's launcher: cluster, Redis, Runway migrated,
the demo databases seeded, worker, beat, web, the demo application). Each run: a deployment
of analyticbot-staging (at 0017) to 0018 (an upgrade step only, on the worker), watched by its
rules, of which only the health rule is on, pointed at a health URL served by this script. Once the
upgrade is done, the URL starts answering 503 (the condition arises, t0); measured: when the
rule fired (t1), when the rollback run exists (t2: the rollback started) and when it finished
(t3, the database back at 0017 by downgrade). Target: t2 - t0 at most 15 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.cluster import free_port  # noqa: E402
from devstack.launcher import Stack  # noqa: E402

UPGRADE_ONLY = """
id: bench-upgrade
title: Upgrade (bench)
needs_target: true
phases:
  - id: only
    title: Only
    steps:
      - id: upgrade
        action: schema.upgrade
        title: Upgrade
"""


class Health:
    def __init__(self) -> None:
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(outer.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/health"


def wait(predicate: Any, what: str, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--users", type=int, default=300)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="runway-bench-triggers-"))
    home.chmod(0o755)
    stack = Stack(home, free_port(), args.users, free_port())
    started = time.monotonic()
    try:
        stack.start()
        print(f"demo stack up in {time.monotonic() - started:.0f} s", flush=True)
        os.environ.update(stack.env(stack.redis_url))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
        import django

        django.setup()
        measure(args, Health())
    finally:
        stack.stop()


def measure(args: argparse.Namespace, health: Health) -> None:
    from django.conf import settings
    from django.contrib.auth.models import User

    from dashboard.backups.models import Backup, Validation
    from dashboard.databases.models import ManagedDatabase
    from dashboard.jobs.tasks import run_job
    from dashboard.schema.analysis import pending_of
    from dashboard.triggers import rules
    from dashboard.triggers.models import Firing, Signal
    from runbooks import engine
    from runbooks.actions import REGISTRY
    from runbooks.loader import load_text
    from runbooks.models import Run, RunState, StepState

    db = ManagedDatabase.objects.get(name="analyticbot-staging")
    wait(lambda: pending_of(db).known, "the worker's first connection check", timeout=120)
    for rule in rules.rules_of(db):
        rule.enabled = rule.signal == Signal.HEALTH
        if rule.enabled:
            rule.config, rule.grace_seconds = {"url": health.url}, 0
        rule.save()
    health_rule = next(r for r in rules.rules_of(db) if r.signal == Signal.HEALTH)
    engineer = User.objects.get(username="engineer")
    book = load_text(UPGRADE_ONLY, "bench.yaml", REGISTRY.keys())
    queue = settings.RUNWAY_JOB_QUEUE
    print(
        f"beat ticks every {settings.CELERY_BEAT_SCHEDULE['watch-triggers']['schedule']:g} s; "
        f"health rule: > {health_rule.threshold:g}% over {health_rule.window_seconds} s "
        f"(at least 3 samples), grace {health_rule.grace_seconds} s",
        flush=True,
    )
    fired, began, done = [], [], []
    for n in range(args.runs):
        health.status = 200
        # The upgrade's job waits for its (recorded, validated) backup: sent once it is there.
        settings.RUNWAY_JOB_QUEUE = "bench-nobody"
        run = engine.start_run(engineer, book, db, "0018")
        settings.RUNWAY_JOB_QUEUE = queue
        backup = Backup.objects.create(database=db, state="succeeded", revision="0017")
        Validation.objects.create(backup=backup, state="succeeded", passed=True)
        Run.objects.filter(pk=run.pk).update(backup=backup)
        job = run.steps.get(step_id="upgrade").job
        run_job.apply_async(("run_step", job.pk), queue=queue)
        wait(
            lambda r=run: r.steps.get(step_id="upgrade").state == StepState.DONE,
            "the upgrade on the worker",
        )
        time.sleep(12)  # a window of healthy samples first
        t0 = time.monotonic()
        health.status = 503
        t1 = wait(lambda r=run: Firing.objects.filter(watch__run_id=r.pk).exists(), "the firing")
        t2 = wait(lambda r=run: Run.objects.filter(rollback_of=r).exists(), "the rollback run")
        rollback = Run.objects.get(rollback_of=run)
        t3 = wait(
            lambda rb=rollback: Run.objects.get(pk=rb.pk).state != RunState.ACTIVE,
            "the rollback to end",
            timeout=300,
        )
        rollback.refresh_from_db()
        fired.append(t1 - t0)
        began.append(t2 - t0)
        done.append(t3 - t0)
        print(
            f"  run {n + 1}: fired {t1 - t0:5.1f} s, rollback started {t2 - t0:5.1f} s, "
            f"ended {t3 - t0:5.1f} s ({rollback.get_state_display()}: "
            f"{(rollback.reason or '')[:80]})",
            flush=True,
        )
    print(
        f"median of {args.runs}: fired {statistics.median(fired):.1f} s, rollback started "
        f"{statistics.median(began):.1f} s (target 15 s), rolled back "
        f"{statistics.median(done):.1f} s after the health URL began failing"
    )


if __name__ == "__main__":
    main()
