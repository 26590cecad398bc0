"""``manage.py cancel_rollback RUN_ID --reason ... --by LEAD``: cancel an automatic rollback
within its grace period, as the rollback run page's Cancel button does."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from runbooks import rollback
from runbooks.models import Run


class Command(BaseCommand):
    help = (
        "Cancel a rollback run within its grace period (nothing has touched the database yet). "
        "Only a lead (or higher) may; after the grace period it is refused."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_id", help="the rollback run's number")
        parser.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
        parser.add_argument("--by", required=True, help="the Runway user cancelling (a lead)")

    def handle(self, *args: object, **opts: Any) -> None:
        raw = str(opts["run_id"]).strip().lstrip("#")
        if not raw.isdigit() or len(raw) > 18:
            raise CommandError(f"{opts['run_id']!r} is not a run number.")
        run = Run.objects.select_related("database").filter(pk=int(raw)).first()
        if run is None:
            raise CommandError(f"No run #{raw}.")
        actor = User.objects.filter(username=opts["by"]).first()
        if actor is None:
            raise CommandError(f"No Runway user named {opts['by']!r}.")
        try:
            done = rollback.cancel_rollback(actor, run, str(opts["reason"]))
        except rollback.RollbackError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Rollback run #{done.pk} cancelled: {done.reason}")
