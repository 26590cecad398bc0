import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.databases.models import ManagedDatabase
from dashboard.jobs import lifecycle as jobs
from dashboard.lib import alembic
from dashboard.schema import gates
from dashboard.schema.analysis import pending_and_tables
from dashboard.schema.models import GateRun


class Command(BaseCommand):
    help = (
        "Run the pre-migration gates for a managed database's pending revisions, here and now "
        "(no worker needed). Exits 1 when any gate fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("database", help="the managed database's name")
        parser.add_argument("--format", choices=["text", "json"], default="text")

    def handle(self, *args: object, database: str, format: str, **opts: Any) -> None:
        db = ManagedDatabase.objects.filter(name=database).first()
        if db is None:
            names = ", ".join(ManagedDatabase.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"No managed database named {database!r} (registered: {names}).")
        try:
            revisions, tables = pending_and_tables(db)
        except (alembic.NotAnAlembicProject, alembic.AlembicError) as exc:
            raise CommandError(f"{db.name}: {exc}") from None
        run = gates.request_gate_run(None, db, revisions=revisions, tables=tables, enqueue=False)
        done = jobs.run("gate_run", run.pk)
        if done is None:
            raise CommandError(f"{db.name}: gate run #{run.pk} was taken by another process.")
        assert isinstance(done, GateRun)
        if not done.succeeded:
            raise CommandError(f"{db.name}: {done.error}")
        if format == "json":
            self.stdout.write(json.dumps(done.results, indent=2))
        else:
            self.write_text(db, done.revisions, tables, done.results, opts["verbosity"])
            self.stdout.write(f"Overall: {done.verdict.upper()} (gate run #{done.pk})")
        if done.verdict == gates.FAIL:
            raise SystemExit(1)

    def write_text(
        self,
        db: ManagedDatabase,
        revisions: list[str],
        tables: list[str],
        results: list[dict[str, Any]],
        verbosity: int,
    ) -> None:
        self.stdout.write(
            f"{db.name} ({db.environment}): pending {', '.join(revisions) or 'none'}; "
            f"tables {', '.join(tables) or 'none'}"
        )
        styles = {
            gates.PASS: self.style.SUCCESS,
            gates.WARN: self.style.WARNING,
            gates.FAIL: self.style.ERROR,
        }
        width = max(len(r["title"]) for r in results)
        for result in results:
            verdict = styles[result["verdict"]](f"{result['verdict'].upper():<4}")
            self.stdout.write(f"{verdict}  {result['title']:<{width}}  {result['summary']}")
            if verbosity >= 2 and result["evidence"]:
                evidence = json.dumps(result["evidence"], indent=2, sort_keys=True)
                self.stdout.write("\n".join("      " + line for line in evidence.splitlines()))
