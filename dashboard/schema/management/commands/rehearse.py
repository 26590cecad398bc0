from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.databases.models import ManagedDatabase
from dashboard.jobs import lifecycle as jobs
from dashboard.schema import rehearsal
from dashboard.schema.models import Rehearsal


class Command(BaseCommand):
    help = (
        "Rehearse a managed database's pending revisions in this process: copy the database, run "
        "them on the copy with per-revision timing and lock waits, drop the copy."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("database", help="the managed database's name")

    def handle(self, *args: object, database: str, **opts: object) -> None:
        db = ManagedDatabase.objects.filter(name=database).first()
        if db is None:
            names = ", ".join(ManagedDatabase.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"No managed database named {database!r} (registered: {names}).")
        try:
            requested = rehearsal.request_rehearsal(None, db, enqueue=False)
        except rehearsal.RehearsalError as exc:
            raise CommandError(str(exc)) from None
        start = ", ".join(requested.from_revisions)
        self.stdout.write(
            f"Rehearsing {', '.join(requested.revisions)} of {db.name} "
            f"({start} → {requested.to_revision}) as rehearsal #{requested.pk}..."
        )
        done = jobs.run("rehearsal", requested.pk)
        if done is None:
            raise CommandError(f"Rehearsal #{requested.pk} was taken by another process.")
        assert isinstance(done, Rehearsal)
        self.write_result(done)
        if not done.succeeded:
            raise CommandError(f"Rehearsal #{done.pk} {done.state}: {done.error}")

    def write_result(self, done: Rehearsal) -> None:
        if done.method:
            source = f" (backup #{done.backup_id})" if done.backup_id else ""
            copied = f" in {done.copy_seconds:.2f} s" if done.copy_seconds is not None else ""
            self.stdout.write(f"Copy: {done.get_method_display()}{source}{copied}")
        for timing in done.timings:
            mark = "ok  " if timing["ok"] else "FAIL"
            self.stdout.write(
                f"  {mark} {timing['revision']:<14} {timing['seconds']:8.3f} s"
                f"   longest lock wait {timing['lock_wait_ms']:.0f} ms"
            )
            if timing["error"]:
                self.stdout.write(f"       {timing['error']}")
        if done.drop_error:
            self.stderr.write(self.style.WARNING(done.drop_error))
        if done.succeeded:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Rehearsal #{done.pk} succeeded: {len(done.timings)} revision(s) in "
                    f"{done.total_seconds or 0:.3f} s, longest lock wait "
                    f"{done.longest_lock_wait_ms or 0:.0f} ms."
                )
            )
