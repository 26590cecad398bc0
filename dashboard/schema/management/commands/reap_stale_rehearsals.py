from django.core.management.base import BaseCommand

from dashboard.schema import rehearsal


class Command(BaseCommand):
    help = "Fail rehearsals whose worker died and drop their copies; what the periodic task does."

    def handle(self, *args: object, **opts: object) -> None:
        reaped = rehearsal.reap_stale()
        for found in reaped:
            self.stdout.write(f"  rehearsal #{found.pk} of {found.database.name}: {found.error}")
        self.stdout.write(f"Reaped {len(reaped)} rehearsal(s).")
