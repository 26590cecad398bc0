from django.core.management.base import BaseCommand

from dashboard.backups import pipeline, validation


class Command(BaseCommand):
    help = (
        "Fail backups and validations whose worker died (stale heartbeat), aborting their uploads "
        "and dropping their scratch databases; what the periodic task does."
    )

    def handle(self, *args: object, **opts: object) -> None:
        backups = pipeline.reap_stale()
        validations = validation.reap_stale()
        for backup in backups:
            self.stdout.write(f"  backup #{backup.pk} of {backup.database.name}: {backup.error}")
        for proof in validations:
            self.stdout.write(f"  validation #{proof.pk}: {proof.error}")
        self.stdout.write(f"Reaped {len(backups)} backup(s) and {len(validations)} validation(s).")
