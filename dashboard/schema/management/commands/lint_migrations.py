"""``manage.py lint_migrations``: the risk report of an Alembic project's revisions, for people
and for CI. Without ``--database`` nothing connects anywhere (not even to Runway's own
database); exit status 1 when any revision is graded high, 2 on bad input.

Which revisions: a range (``--from``/``--to``), or a selection (``--revision``,
``--changed-since GITREF``), each selected revision judged as if applied to production at its
parent. Output: text, JSON, SARIF 2.1.0 or GitHub Actions annotations
(:mod:`dashboard.schema.lint_formats`); SARIF and annotation paths are relative to the git
repository holding the script location (the current directory outside one)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.databases import credentials
from dashboard.lib import alembic, pg
from dashboard.lib.secrets import SecretError
from dashboard.schema import lint_formats, risk

BASE = {"base", ""}
HIGH = 1  # exit status when any revision is graded high
BAD_INPUT = 2  # exit status for bad input (CommandError)
HEADS = {"head", "heads"}
GIT_TIMEOUT = 60  # seconds, per git command


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
        parser.add_argument(
            "--revision",
            action="append",
            default=[],
            metavar="ID",
            help="lint exactly this revision (an id or a branch label; repeatable), judged as "
            "if applied to production at its parent; instead of --from/--to",
        )
        parser.add_argument(
            "--changed-since",
            metavar="GITREF",
            help="lint the revisions whose files changed since this git ref: what `git diff "
            "GITREF...HEAD` lists (the branch's changes since it left GITREF), plus uncommitted "
            "and untracked files; each judged as if applied to production at its parent",
        )
        parser.add_argument(
            "--format",
            choices=["text", "json", "sarif", "github"],
            default="text",
            help="sarif: SARIF 2.1.0 for code scanning; github: GitHub Actions annotations "
            "(paths relative to the git repository's root, or the current directory)",
        )

    def handle(self, *args: object, **opts: Any) -> None:
        db = self.database(opts["database"]) if opts["database"] else None
        location = opts["script_location"] or (str(db.script_path) if db else "")
        if not location:
            raise CommandError(
                "Give --script-location PATH (or --database NAME).", returncode=BAD_INPUT
            )
        names = [n.strip() for value in opts["revision"] for n in value.split(",") if n.strip()]
        if opts["revision"] and not names:
            raise CommandError(
                "--revision needs a revision id or branch label.", returncode=BAD_INPUT
            )
        since = opts["changed_since"]
        selecting = bool(names) or since is not None
        if selecting and (opts["from_rev"] is not None or opts["to_rev"] is not None):
            raise CommandError(
                "--revision and --changed-since choose the revisions themselves: drop --from "
                "and --to.",
                returncode=BAD_INPUT,
            )
        try:
            # A render worker imports Alembic while the scripts are read (about a second).
            alembic.render.prestart(alembic.check_project(Path(location)))
            tree = alembic.read_scripts(Path(location))
        except alembic.NotAnAlembicProject as exc:
            raise CommandError(str(exc), returncode=BAD_INPUT) from None
        if len(tree) >= 2 * risk.REVISIONS_PER_RENDER_WORKER:
            alembic.render.prestart(tree.location)  # the second of two
        fmt = opts["format"]
        root = _repository_root(tree.location) if fmt in ("sarif", "github") else None

        selected: set[str] = set()
        if selecting:
            selected = _resolve(tree, names, location)
            if since is not None:
                selected |= changed_revisions(tree, since)
        self.warn(tree, root if fmt == "github" else None)
        if selecting and not selected:
            self.write_nothing_changed(since or "", fmt, tree, root)
            return

        pg_major = sizes = None
        acceptances: dict[tuple[str, str], dict[str, str]] = {}
        from_revs = _split(opts["from_rev"])
        if db is not None:
            pg_major, sizes, current = self.read_database(db)
            acceptances = _acceptances(db)
            if opts["from_rev"] is None and not selecting:
                unknown = [c for c in current if c not in tree]
                if unknown:
                    raise CommandError(
                        f"{db.name} is at {', '.join(unknown)}, which no script in {location} "
                        "defines: give --from, or check the script location.",
                        returncode=BAD_INPUT,
                    )
                from_revs = current
        if selecting:
            # Each is judged at its parent; what earlier revisions made of the schema (column
            # types, checks) still matters, so their ancestors are analysed too, then dropped.
            context = tree.ancestors_of_all(selected, include_self=True)
            revisions = [rid for rid in tree.oldest_first() if rid in context]
        else:
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
            pending=db is not None and opts["from_rev"] is None and not selecting,
            downgrade=False,  # the grades are the upgrades'
        )
        if selecting:
            reports = [r for r in reports if r.revision in selected]
        if fmt == "text":
            self.write_env(tree)
        if fmt == "json":
            self.stdout.write(json.dumps([r.to_json() for r in reports], indent=2))
        elif fmt in ("sarif", "github"):
            assert root is not None
            paths = {r.revision: _relative(tree.location / r.file, root) for r in reports}
            if fmt == "sarif":
                problems = _problems(tree, root)
                log = lint_formats.sarif(reports, paths, root=root, problems=problems)
                self.stdout.write(json.dumps(log, indent=2))
            else:
                for line in lint_formats.github(reports, paths):
                    self.stdout.write(line)
        elif selecting:
            self.write_text(reports, _scope(names, since), db is not None)
        else:
            start = ", ".join(from_revs) if from_revs else "the base"
            self.write_text(reports, f"after {start}", db is not None)
        if any(r.grade == "high" for r in reports):
            raise SystemExit(HIGH)

    def warn(self, tree: alembic.ScriptTree, root: Path | None) -> None:
        """Script folder problems, on stderr: as annotations when ``root`` is given."""
        if root is None:
            for problem in tree.problems:
                self.stderr.write(f"warning: {problem.message}")
            return
        for message, path in _problems(tree, root):
            self.stderr.write(lint_formats.github_warning(message, path or None))

    def write_nothing_changed(
        self, since: str, fmt: str, tree: alembic.ScriptTree, root: Path | None
    ) -> None:
        """A machine format still gets a valid, empty report on stdout; the words go to
        stderr there."""
        message = f"No revision file changed since {since}."
        if fmt == "json":
            self.stdout.write("[]")
        elif fmt == "sarif":
            assert root is not None
            log = lint_formats.sarif([], {}, root=root, problems=_problems(tree, root))
            self.stdout.write(json.dumps(log, indent=2))
        if fmt in ("json", "sarif"):
            self.stderr.write(message)
        else:
            self.stdout.write(message)

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
        except pg.Error as exc:
            problem = pg.classify(exc)
            detail = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
            raise CommandError(
                f"{db.name}: {pg.PROBLEM_MESSAGES[problem]}: {pg.redact(detail)}",
                returncode=BAD_INPUT,
            ) from None
        return major, sizes, current

    def write_env(self, tree: alembic.ScriptTree) -> None:
        """What env.py says (read, never run): the plugins it imports, the timeouts it sets."""
        facts = alembic.render.env_facts(tree.location)
        if facts.plugins:
            self.stdout.write(
                f"env.py imports {', '.join(facts.plugins)} (not run; installed "
                "plugins are loaded so their operations exist)"
            )
        if facts.timeouts:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(facts.timeouts.items()))
            self.stdout.write(
                f"env.py sets {shown} on its connections (Runway's environment sets its own)"
            )

    def write_text(self, reports: list[risk.RevisionReport], scope: str, with_sizes: bool) -> None:
        if not reports:
            self.stdout.write(f"Nothing to analyse {scope}.")
            return
        self.stdout.write(
            f"{len(reports)} revision{'s' if len(reports) != 1 else ''} {scope}"
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


def _scope(names: list[str], since: str | None) -> str:
    parts = [f"selected ({', '.join(names)})"] if names else []
    if since is not None:
        parts.append(f"changed since {since}")
    return " or ".join(parts) + ", each as applied to production at its parent"


def _resolve(tree: alembic.ScriptTree, names: list[str], location: str) -> set[str]:
    """The ids of ``names`` (ids or branch labels); CommandError naming every unknown one."""
    found = {name: tree.resolve(name) for name in names}
    unknown = [name for name, rid in found.items() if rid is None]
    if unknown:
        raise CommandError(
            f"unknown revision{'s' if len(unknown) != 1 else ''} "
            f"{', '.join(repr(n) for n in unknown)} in {location}.",
            returncode=BAD_INPUT,
        )
    return {rid for rid in found.values() if rid is not None}


def _problems(tree: alembic.ScriptTree, root: Path) -> list[tuple[str, str]]:
    """(message, path relative to ``root``, or "") of each script folder problem."""
    return [
        (p.message, _relative(tree.location / p.file, root) if p.file else "")
        for p in tree.problems
    ]


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, with ``/`` (``..`` when it lies outside)."""
    return Path(os.path.relpath(path.resolve(), root)).as_posix()


# --- git, for --changed-since ---


class GitFailed(Exception):
    """git ran and refused; the message is its first line of stderr."""


def _git(cwd: Path, *args: str) -> bytes:
    """stdout of one git command, run in ``cwd`` without a shell or a prompt."""
    argv = ["git", "-C", str(cwd), "-c", "core.fsmonitor=false", *args]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        done = subprocess.run(
            argv, capture_output=True, stdin=subprocess.DEVNULL, env=env, timeout=GIT_TIMEOUT
        )
    except FileNotFoundError:
        raise CommandError(
            "git is not installed (or not on PATH): --changed-since needs it.",
            returncode=BAD_INPUT,
        ) from None
    except subprocess.TimeoutExpired:
        raise CommandError(
            f"git {args[0]} did not answer within {GIT_TIMEOUT} s in {cwd}.", returncode=BAD_INPUT
        ) from None
    if done.returncode != 0:
        lines = os.fsdecode(done.stderr).strip().splitlines()
        raise GitFailed(lines[0] if lines else f"git {args[0]} exited {done.returncode}")
    return done.stdout


def _toplevel(location: Path) -> Path:
    out = _git(location, "rev-parse", "--show-toplevel")
    return Path(os.fsdecode(out).rstrip("\n")).resolve()


def _repository_root(location: Path) -> Path:
    """Where SARIF and annotation paths start: the git repository holding ``location``, or
    the current directory when there is none (or no git)."""
    try:
        return _toplevel(location)
    except (GitFailed, CommandError):
        return Path.cwd().resolve()


def changed_revisions(tree: alembic.ScriptTree, ref: str) -> set[str]:
    """The revisions whose files ``git diff REF...HEAD`` lists, or that are modified, staged or
    untracked in the work tree. A ref starting with ``-`` is refused (git would read it as an
    option)."""
    if not ref.strip() or ref.startswith("-"):
        raise CommandError(
            f"--changed-since {ref!r} is not a git ref (a ref cannot be empty or start with '-').",
            returncode=BAD_INPUT,
        )
    try:
        top = _toplevel(tree.location)
    except GitFailed as exc:
        raise CommandError(
            f"{tree.location} is not in a git repository, which --changed-since needs ({exc}).",
            returncode=BAD_INPUT,
        ) from None
    files: dict[str, str] = {}  # path relative to the repository root -> revision id
    for rev in tree:
        try:
            files[(tree.location / rev.path).resolve().relative_to(top).as_posix()] = rev.id
        except ValueError:
            continue  # a version folder outside the repository: git knows nothing of it
    if not files:
        return set()
    # Only the folders holding revision files: a work tree may hold many untracked files.
    specs = ["--", *sorted({f":(literal){Path(f).parent.as_posix()}" for f in files})]
    try:
        commit = os.fsdecode(
            _git(top, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
        ).strip()
    except GitFailed:
        raise CommandError(
            f"--changed-since {ref!r}: no such commit in {top} (a shallow clone may lack it: "
            "fetch it, e.g. actions/checkout with fetch-depth: 0).",
            returncode=BAD_INPUT,
        ) from None
    listings = (
        ("diff", "--name-only", "-z", "--no-ext-diff", f"{commit}...HEAD", *specs),
        ("diff", "--name-only", "-z", "--no-ext-diff", "HEAD", *specs),
        ("ls-files", "--others", "--exclude-standard", "-z", *specs),
    )
    changed: set[str] = set()
    for args in listings:
        try:
            out = _git(top, *args)
        except GitFailed as exc:
            raise CommandError(
                f"--changed-since {ref!r}: git {args[0]} failed in {top}: {exc}",
                returncode=BAD_INPUT,
            ) from None
        changed.update(os.fsdecode(name) for name in out.split(b"\0") if name)
    return {rid for path, rid in files.items() if path in changed}
