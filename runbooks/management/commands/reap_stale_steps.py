from django.core.management.base import BaseCommand

from runbooks import engine


class Command(BaseCommand):
    help = "Fail run steps whose worker died so they can be retried; what the periodic task does."

    def handle(self, *args: object, **opts: object) -> None:
        reaped = engine.reap_stale_steps()
        for step in reaped:
            self.stdout.write(f"  run #{step.run_id} step {step.step_id}: {step.summary}")
        self.stdout.write(f"Reaped {len(reaped)} step(s).")
