"""``manage.py lint_migrations``: the risk report of an Alembic project's revisions, for people
and for CI. Without ``--database`` nothing connects anywhere (not even to Runway's own
database); exit status 1 when any revision is graded high."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.databases import credentials
from dashboard.lib import alembic, pg
from dashboard.lib.secrets import SecretError
from dashboard.schema import risk

BASE = {"base", ""}
HIGH = 1  # exit status when any revision is graded high
BAD_INPUT = 2  # exit status for bad input (CommandError)
HEADS = {"head", "heads"}


class Command(BaseCommand):
    # A CI job lints with no database and none of Runway's secrets: no system checks.
    requires_system_checks: list[str] = []
    help = (
        "Grade each revision between two points of an Alembic chain (low/medium/high) with "
        "its findings and the safe way to write them. Exits 1 when any revision is high."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--script-location",
            help="the Alembic folder (env.py, versions/); default: the --database's",
        )
        parser.add_argument(
            "--database",
            help="a registered managed database: its live table sizes, server version and "
            "current revision (the default --from)",
        )
        parser.add_argument(
            "--from",
            dest="from_rev",
            help="start after this revision (comma-separated for several heads); default: the "
            "database's current revision, or the base without --database",
        )
        parser.add_argument("--to", dest="to_rev", help="end at this revision; default: heads")
        parser.add_argument("--format", choices=["text", "json"], default="text")

    def handle(self, *args: object, **opts: Any) -> None:
        db = self.database(opts["database"]) if opts["database"] else None
        location = opts["script_location"] or (str(db.script_path) if db else "")
        if not location:
            raise CommandError(
                "Give --script-location PATH (or --database NAME).", returncode=BAD_INPUT
            )
        try:
            tree = alembic.read_scripts(Path(location))
        except alembic.NotAnAlembicProject as exc:
            raise CommandError(str(exc), returncode=BAD_INPUT) from None
        for problem in tree.problems:
            self.stderr.write(f"warning: {problem.message}")

        pg_major = sizes = None
        acceptances: dict[tuple[str, str], dict[str, str]] = {}
        from_revs = _split(opts["from_rev"])
        if db is not None:
            pg_major, sizes, current = self.read_database(db)
            acceptances = _acceptances(db)
            if opts["from_rev"] is None:
                unknown = [c for c in current if c not in tree]
                if unknown:
                    raise CommandError(
                        f"{db.name} is at {', '.join(unknown)}, which no script in {location} "
                        "defines: give --from, or check the script location.",
                        returncode=BAD_INPUT,
                    )
                from_revs = current
        to_rev = opts["to_rev"]
        to_rev = None if to_rev is None or to_rev.strip().lower() in HEADS else to_rev.strip()
        try:
            revisions = risk.revisions_between(tree, from_revs, to_rev)
        except ValueError as exc:
            raise CommandError(f"{exc} in {location}.", returncode=BAD_INPUT) from None

        reports = risk.analyse(
            location,
            tree,
            revisions,
            pg_major=pg_major,
            table_sizes=sizes,
            acceptances=acceptances,
            # With a database, what follows its current revision is still to run on it.
            pending=db is not None and opts["from_rev"] is None,
        )
        if opts["format"] == "json":
            self.stdout.write(json.dumps([r.to_json() for r in reports], indent=2))
        else:
            self.write_text(reports, from_revs, db is not None)
        if any(r.grade == "high" for r in reports):
            raise SystemExit(HIGH)

    def database(self, name: str) -> Any:
        from dashboard.databases.models import ManagedDatabase

        db = ManagedDatabase.objects.filter(name=name).first()
        if db is None:
            names = ", ".join(ManagedDatabase.objects.values_list("name", flat=True)) or "none"
            raise CommandError(
                f"No managed database named {name!r} (registered: {names}).", returncode=BAD_INPUT
            )
        return db

    def read_database(self, db: Any) -> tuple[int, risk.TableSizes, list[str]]:
        try:
            password = credentials.password(db)
        except SecretError as exc:
            raise CommandError(f"{db.name}: {exc}", returncode=BAD_INPUT) from None
        try:
            with pg.connect(db.dsn, password, timeout=settings.RUNWAY_CONNECT_TIMEOUT) as conn:
                major = conn.info.server_version // 10000
                sizes = pg.table_sizes(conn)
                current = [c for c in pg.alembic_revision(conn).split(",") if c]
        except pg.BadDsn as exc:
            raise CommandError(f"{db.name}: {exc}", returncode=BAD_INPUT) from None
        except psycopg.Error as exc:
            problem = pg.classify(exc)
            detail = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
            raise CommandError(
                f"{db.name}: {pg.PROBLEM_MESSAGES[problem]}: {pg.redact(detail)}",
                returncode=BAD_INPUT,
            ) from None
        return major, sizes, current

    def write_text(
        self, reports: list[risk.RevisionReport], from_revs: list[str], with_sizes: bool
    ) -> None:
        start = ", ".join(from_revs) if from_revs else "the base"
        if not reports:
            self.stdout.write(f"Nothing to analyse after {start}.")
            return
        self.stdout.write(
            f"{len(reports)} revision{'s' if len(reports) != 1 else ''} after {start}"
            + ("" if with_sizes else " (no database: table sizes unknown)")
        )
        style = {"high": self.style.ERROR, "medium": self.style.WARNING, "low": self.style.SUCCESS}
        for report in reports:
            self.stdout.write("")
            self.stdout.write(
                style[report.grade](f"{report.revision}  {report.grade.upper()}")
                + f"  {report.message}  ({report.file})"
            )
            for reason in report.reasons:
                self.stdout.write(f"  - {reason}")
            for f in report.findings:
                if f.severity == "note" and not f.accepted:
                    continue
                self.write_finding(f)
            names = sorted(
                {f.rule for f in report.findings if f.severity == "note" and not f.accepted}
            )
            if names:
                self.stdout.write(f"  notes: {', '.join(names)}")
        counts = {g: sum(1 for r in reports if r.grade == g) for g in ("high", "medium", "low")}
        findings = sum(len(r.findings) for r in reports)
        notes = sum(1 for r in reports for f in r.findings if f.severity == "note")
        self.stdout.write("")
        self.stdout.write(
            f"{counts['high']} high, {counts['medium']} medium, {counts['low']} low; "
            f"{findings} finding{'s' if findings != 1 else ''}, {notes} of them notes"
        )

    def write_finding(self, f: risk.Finding) -> None:
        where = ", ".join(x for x in (f.table, f.lock, f.table_size) if x)
        accepted = f" [accepted: {f.accepted['comment']}]" if f.accepted else ""
        also = f" (squawk: {', '.join(f.squawk_rules)})" if f.squawk_rules else ""
        source = " (squawk)" if f.source == "squawk" else ""
        self.stdout.write(f"  [{f.severity}] {f.rule}{source}{also} — {where}{accepted}")
        if f.statement:
            self.stdout.write(f"      {' '.join(f.statement.split())[:200]}")
        self.stdout.write(f"      {f.message}")
        if f.safe_way:
            self.stdout.write(f"      safe way: {f.safe_way}")


def _split(value: str | None) -> list[str]:
    if value is None:
        return []
    return [v.strip() for v in value.split(",") if v.strip() and v.strip().lower() not in BASE]


def _acceptances(db: Any) -> dict[tuple[str, str], dict[str, str]]:
    from dashboard.schema.models import RiskAcceptance

    return {
        (a.revision, a.rule): {"by": a.accepted_by.get_username(), "comment": a.comment}
        for a in RiskAcceptance.objects.filter(database=db).select_related("accepted_by")
    }
