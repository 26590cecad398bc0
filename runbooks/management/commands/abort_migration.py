"""``manage.py abort_migration <database> --reason ... [--grace N] [--by USER] [--no-wait]``:
stop the migration running on a database safely, as the run page's Abort button does."""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.databases.models import ManagedDatabase
from dashboard.schema.watch import DEFAULT_GRACE
from runbooks import engine
from runbooks.models import RunState, StepJob, StepRun, StepState

MIGRATING_ACTIONS = ("schema.upgrade",)


class Command(BaseCommand):
    help = (
        "Abort the migration running on a managed database: nothing more starts, its statement "
        "is cancelled, its session ended after the grace period if it is still in the "
        "revision's transaction, and the rollback is confirmed. The step fails as aborted "
        "(retry it to resume) and says which revision the database is at."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("database", help="the managed database's name")
        parser.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
        parser.add_argument(
            "--grace",
            type=float,
            default=DEFAULT_GRACE,
            help=f"seconds from the cancel to ending the session (default {DEFAULT_GRACE:g})",
        )
        parser.add_argument(
            "--by", help="the Runway user asking (an engineer or higher); default: system"
        )
        parser.add_argument(
            "--no-wait", action="store_true", help="ask, and do not wait for the step to end"
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=120.0,
            help="seconds to wait for the step to end (default 120)",
        )

    def handle(self, *args: object, **opts: Any) -> None:
        name = str(opts["database"])
        db = ManagedDatabase.objects.filter(name=name).first()
        if db is None:
            raise CommandError(f"No managed database named {name!r}.")
        actor = None
        if opts["by"]:
            actor = User.objects.filter(username=opts["by"]).first()
            if actor is None:
                raise CommandError(f"No Runway user named {opts['by']!r}.")
        step = (
            StepRun.objects.select_related("run")
            .filter(
                run__database=db,
                run__state=RunState.ACTIVE,
                state=StepState.STARTED,
                action__in=MIGRATING_ACTIONS,
            )
            .first()
        )
        if step is None or not step.is_live:
            raise CommandError(f"No migration is running on {db.name}: nothing to abort.")
        run = step.run
        try:
            done = engine.abort_step(actor, run, step, str(opts["reason"]), grace=opts["grace"])
        except engine.RunError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"Abort requested for “{step.title}” of run #{run.pk} on {db.name} "
            f"(job #{done['job']}, attempt {done['attempt']}, grace {opts['grace']:g} s)."
        )
        if opts["no_wait"]:
            return
        job = StepJob.objects.get(pk=done["job"])
        deadline = time.monotonic() + float(opts["timeout"])
        while job.is_active and time.monotonic() < deadline:
            time.sleep(0.5)
            job.refresh_from_db()
        step.refresh_from_db()
        if job.is_active:
            raise CommandError(
                f"The step had not stopped after {opts['timeout']:g} s (job #{job.pk} is "
                f"{job.state}): look at run #{run.pk}'s page."
            )
        self.stdout.write(f"{step.get_state_display()}: {step.summary}")
        aborted = (job.evidence or {}).get("abort") or {}
        if aborted.get("problems") or aborted.get("session_after") == "STILL IN A TRANSACTION":
            raise CommandError("The rollback was not confirmed: see the step's summary.")
