from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from dashboard.backups import retention
from dashboard.databases.models import ManagedDatabase
from dashboard.lib.storage import Leftover


class Command(BaseCommand):
    help = (
        "Delete backups past their database's retention (never the newest validated one) and "
        "the leftovers of backups that failed or were interrupted; what the periodic task does."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="say what would go; change nothing"
        )
        parser.add_argument("--database", help="only this managed database")

    def handle(self, *args: object, **opts: object) -> None:
        db = None
        if opts["database"]:
            db = ManagedDatabase.objects.filter(name=str(opts["database"])).first()
            if db is None:
                raise CommandError(f"No managed database named {opts['database']!r}.")
        dry_run = bool(opts["dry_run"])
        errors: list[str] = []
        uploads: list[Leftover] = []
        now = timezone.now()
        gone = retention.prune(db, dry_run=dry_run, now=now, errors=errors, uploads=uploads)
        verb = "would remove" if dry_run else "removed"
        for backup in gone:
            taken = backup.started_at or backup.created_at
            age = (now - taken).days
            what = "backup" if backup.succeeded else f"leftovers of {backup.state} backup"
            self.stdout.write(
                f"  {verb} {what} #{backup.pk} of {backup.database.name} ({age} days old)"
            )
        for upload in uploads:
            self.stdout.write(f"  {verb} an upload no backup knows: {upload.url}")
        for error in errors:
            self.stderr.write(f"  {error}")
        summary = f"{len(gone)} backup(s) and {len(uploads)} orphaned upload(s)"
        self.stdout.write(f"{'Dry run: ' if dry_run else ''}{verb} {summary}.")
        if errors:
            raise CommandError(f"{len(errors)} could not be removed; see above.")
