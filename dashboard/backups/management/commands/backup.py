from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.template.defaultfilters import filesizeformat

from dashboard.backups import pipeline
from dashboard.backups.models import Backup, Compression, DumpFormat
from dashboard.databases.models import ManagedDatabase
from dashboard.jobs import lifecycle as jobs
from dashboard.jobs.models import JobState


class Command(BaseCommand):
    help = (
        "Back up a managed database now, in this process: pg_dump, compress, encrypt, store. "
        "With --queue, hand it to the workers instead."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("database", help="the managed database's name")
        parser.add_argument("--format", choices=DumpFormat.values, help="default: settings")
        parser.add_argument("--compression", choices=Compression.values, help="default: settings")
        parser.add_argument("--reason", default="manage.py backup")
        parser.add_argument("--queue", action="store_true", help="let a worker take it")

    def handle(self, *args: object, **opts: object) -> None:
        name = str(opts["database"])
        db = ManagedDatabase.objects.filter(name=name).first()
        if db is None:
            raise CommandError(f"No managed database named {name!r}.")
        try:
            backup = pipeline.request_backup(
                None,
                db,
                reason=str(opts["reason"]),
                format=opts["format"] or None,  # type: ignore[arg-type]
                compression=opts["compression"] or None,  # type: ignore[arg-type]
                enqueue=bool(opts["queue"]),
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if opts["queue"]:
            self.stdout.write(f"Backup #{backup.pk} of {db.name} queued for the workers.")
            return
        self.stdout.write(
            f"Backing up {db.name} (backup #{backup.pk}, {backup.format}, "
            f"{backup.compression}, GPG AES256)..."
        )
        done = jobs.run("backup", backup.pk)
        if done is None:
            raise CommandError(f"Backup #{backup.pk} was taken by another process.")
        assert isinstance(done, Backup)
        if done.state == JobState.QUEUED:
            raise CommandError(
                f"Backup #{done.pk} of {db.name} hit a transient failure and was queued again "
                f"for the workers: {done.error}"
            )
        if not done.completed:
            raise CommandError(f"Backup #{done.pk} of {db.name} {done.state}: {done.error}")
        self.stdout.write(f"  stored at   {done.storage_url}")
        self.stdout.write(
            f"  size        {filesizeformat(done.size_bytes or 0)} ({done.size_bytes} bytes)"
        )
        self.stdout.write(f"  sha256      {done.sha256}")
        self.stdout.write(f"  revision    {done.revision or '(no alembic_version)'}")
        for table, count in done.row_counts.items():
            self.stdout.write(f"  rows        {table}: {count}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Backup #{done.pk} of {db.name} completed in {done.duration_s:.1f} s."
            )
        )
