from django.core.management.base import BaseCommand, CommandError

from dashboard.audit.chain import verify


class Command(BaseCommand):
    help = "Prove the audit trail's hash chain; name the first broken event if there is one."

    def handle(self, *args: object, **options: object) -> None:
        verdict = verify()
        if not verdict.ok:
            event = verdict.first_broken
            assert event is not None
            raise CommandError(
                f"Audit chain broken at event #{event.pk} ({event.action} by {event.actor_name} "
                f"at {event.created_at.isoformat()}): {verdict.reason}. "
                f"{verdict.checked} events before it are intact."
            )
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {verdict.checked} events."))
