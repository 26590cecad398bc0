import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.databases import credentials
from dashboard.databases.models import ManagedDatabase
from dashboard.lib import alembic, pg
from dashboard.lib.secrets import SecretError
from dashboard.schema.status import scripts_of


class Command(BaseCommand):
    help = "Show a managed database's Alembic history: current, pending, heads, drift, problems."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("database", help="the managed database's name")
        parser.add_argument("--format", choices=["text", "json"], default="text")
        parser.add_argument(
            "--offline", action="store_true", help="do not connect: scripts only, current unknown"
        )

    def handle(
        self, *args: object, database: str, format: str, offline: bool, **opts: object
    ) -> None:
        db = ManagedDatabase.objects.filter(name=database).first()
        if db is None:
            names = ", ".join(ManagedDatabase.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"No managed database named {database!r} (registered: {names}).")
        try:
            tree = scripts_of(db)
        except alembic.NotAnAlembicProject as exc:
            raise CommandError(str(exc)) from None
        current: list[str] = []
        if not offline:
            try:
                password = credentials.password(db)
            except SecretError as exc:
                raise CommandError(f"{db.name}: {exc}") from None
            probe = pg.probe(db.dsn, password, timeout=settings.RUNWAY_CONNECT_TIMEOUT)
            if not probe.ok and probe.problem != "no_alembic_version":
                raise CommandError(f"{db.name}: {probe.message}")
            current = probe.current_revisions
        result = alembic.history(tree, current)
        if format == "json":
            self.stdout.write(json.dumps(result.to_json(), indent=2))
            return
        self.write_text(db, result.to_json(), offline)

    def write_text(self, db: ManagedDatabase, data: dict, offline: bool) -> None:
        current = "unknown (offline)" if offline else (", ".join(data["current"]) or "not stamped")
        self.stdout.write(f"{db.name} ({db.environment}): current {current}")
        self.stdout.write(f"heads: {', '.join(data['heads']) or 'none'}")
        self.stdout.write(f"pending: {', '.join(data['pending']) or 'none'}")
        for message in data["drift"]:
            self.stdout.write(self.style.WARNING(f"drift: {message}"))
        for problem in data["problems"]:
            self.stdout.write(self.style.ERROR(f"problem: {problem['message']}"))
        for rev in data["revisions"]:
            mark = "@" if rev["is_current"] else ("*" if rev["is_pending"] else " ")
            down = "" if rev["has_downgrade"] else "  [no downgrade]"
            self.stdout.write(f" {mark} {rev['id']:<14} {rev['message']}{down}")
