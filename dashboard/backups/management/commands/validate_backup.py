from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.backups import validation
from dashboard.backups.models import Backup, Validation
from dashboard.jobs import lifecycle as jobs
from dashboard.jobs.models import JobState


class Command(BaseCommand):
    help = (
        "Prove a backup restores, in this process: restore it into a scratch database, run the "
        "integrity queries, drop the scratch database."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("backup_id", help="the backup's number (see the backup status page)")

    def handle(self, *args: object, **opts: object) -> None:
        raw = str(opts["backup_id"]).lstrip("#")
        if not raw.isdigit():
            raise CommandError(f"{opts['backup_id']!r} is not a backup number.")
        backup = Backup.objects.select_related("database").filter(pk=int(raw)).first()
        if backup is None:
            raise CommandError(f"No backup #{raw}.")
        try:
            requested = validation.request_validation(None, backup, enqueue=False)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Validating backup #{backup.pk} of {backup.database.name}...")
        done = jobs.run("validation", requested.pk)
        if done is None:
            raise CommandError(f"Validation #{requested.pk} was taken by another process.")
        assert isinstance(done, Validation)
        if done.state == JobState.QUEUED:
            raise CommandError(
                f"Validation #{done.pk} hit a transient failure and was queued again for the "
                f"workers: {done.error}"
            )
        for check in done.checks:
            mark = "ok  " if check["ok"] else "FAIL"
            line = f"  {mark} {check['name']}: expected {check['expected']}, found {check['found']}"
            self.stdout.write(line)
        timing = f"restore {done.restore_s or 0:.1f} s, queries {done.queries_s or 0:.1f} s"
        if done.outcome != "passed":
            raise CommandError(f"Validation #{done.pk} {done.outcome} ({timing}): {done.error}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Backup #{backup.pk} restores: validation #{done.pk} passed ({timing})."
            )
        )
