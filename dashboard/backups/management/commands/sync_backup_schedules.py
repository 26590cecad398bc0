from django.core.management.base import BaseCommand

from dashboard.backups import schedules


class Command(BaseCommand):
    help = "Create or update the Celery beat schedules (backup, validation) of every database."

    def handle(self, *args: object, **options: object) -> None:
        tasks, disabled = schedules.sync_all()
        for task in tasks:
            state = f"every {task.interval.every} h" if task.enabled else "off"  # type: ignore[union-attr]
            self.stdout.write(f"  {task.name}: {state}")
        if disabled:
            self.stdout.write(f"  disabled {disabled} schedule(s) of databases that are gone")
        self.stdout.write(self.style.SUCCESS(f"Synced {len(tasks)} backup schedules."))
