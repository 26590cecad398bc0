from django.core.management.base import BaseCommand

from dashboard.databases import checks


class Command(BaseCommand):
    help = "Queue a connection check of every managed database (what Celery beat does)."

    def handle(self, *args: object, **options: object) -> None:
        queued = checks.request_all()
        self.stdout.write(f"Queued {len(queued)} connection checks for the workers.")
