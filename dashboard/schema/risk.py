"""Risk analysis of pending revisions: render each one's SQL offline, lint it, grade it.

For each revision: Alembic renders its SQL offline, one revision at a time
(:func:`dashboard.lib.alembic.render_revisions_sql`); Runway's rules (:mod:`.rules`, on
PostgreSQL's own parser) and squawk (:mod:`dashboard.lib.squawk`) read it; their findings are
merged so one hazard counts once; live table sizes, when known, say whether a blocking scan or
rewrite is brief; acceptances (an inline ``# runway: accept RULE -- reason`` comment in the
revision file, or a lead's) keep a finding listed but out of the grade.

The grade comes from the findings nobody accepted: any high makes the revision high, any medium
medium, otherwise low. Notes (style rules, hazards on tables the running application does not
use yet) never raise it. A revision whose SQL cannot be rendered offline is never low.

Pure: no Django, no database (sizes are handed in).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dashboard.lib import alembic, squawk
from dashboard.schema import risk_cache, rules

__all__ = [
    "Finding",
    "RevisionReport",
    "StatementInfo",
    "Store",
    "Stored",
    "TableSizes",
    "analyse",
    "report_hash",
    "revisions_between",
]

TableSizes = dict[str, tuple[int, int]]  # table -> (estimated rows, total bytes); rows -1: unknown

SEVERITIES = ("note", "medium", "high")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
GRADES = ("low", "medium", "high")

# A blocking scan or rewrite of a table this small is over in moments.
SMALL_ROWS = 10_000
SMALL_BYTES = 50 * 1024 * 1024

# squawk rules about style or habits, not about what a deployment does to production: notes.
_NOTES = {
    "prefer-text-field": "a column type choice, not a deployment risk",
    "prefer-bigint-over-int": "a column type choice, not a deployment risk",
    "prefer-bigint-over-smallint": "a column type choice, not a deployment risk",
    "prefer-identity": "a column type choice, not a deployment risk",
    "prefer-timestamp-tz": "a column type choice, not a deployment risk",
    "prefer-timestamptz": "a column type choice, not a deployment risk",
    "ban-char-field": "a column type choice, not a deployment risk",
    "prefer-robust-stmts": (
        "Alembic records which revisions ran, so the revision is not re-run by hand"
    ),
    "require-timeout-settings": (
        "Runway's guarded execution sets lock_timeout and statement_timeout for every revision"
    ),
    "require-lock-timeout": (
        "Runway's guarded execution sets lock_timeout and statement_timeout for every revision"
    ),
    "require-statement-timeout": (
        "Runway's guarded execution sets lock_timeout and statement_timeout for every revision"
    ),
    "identifier-too-long": "PostgreSQL truncates the name to 63 bytes; check it stays unique",
    "require-table-schema": "a naming habit, not a deployment risk",
    "ban-drop-not-null": "dropping NOT NULL takes a brief lock; old code that assumes values "
    "may meet NULLs",
    "ban-drop-constraint": "dropping a constraint takes a brief lock and stops enforcing it",
    "transaction-nesting": "Alembic writes the revision's BEGIN and COMMIT",
    "ban-uncommitted-transaction": "Alembic writes the revision's BEGIN and COMMIT",
    "unused-ignore": "a squawk-ignore comment that matches nothing",
    "syntax-error": "squawk's parser rejects what PostgreSQL's own parser accepted",
}
# squawk rules Runway's own rules judge more precisely (they know new tables, NOT VALID +
# VALIDATE across transactions, constant defaults, widening types).
_COVERED = frozenset(
    {
        "require-concurrent-index-creation",
        "require-concurrent-index-deletion",
        "ban-concurrent-index-creation-in-transaction",
        "constraint-missing-not-valid",
        "adding-foreign-key-constraint",
        "adding-field-with-default",
        "adding-serial-primary-key-field",
        "adding-required-field",
        "adding-not-nullable-field",
        "changing-column-type",
        "disallowed-unique-constraint",
        "ban-drop-column",
        "ban-drop-table",
        "ban-truncate-cascade",
        "renaming-column",
        "renaming-table",
        "require-concurrent-reindex",
        "prefer-repack",
    }
)

_ACCEPT = re.compile(r"#\s*runway:\s*accept\b(?P<rest>.*)$", re.IGNORECASE)

NOT_PREVIEWABLE_SAFE_WAY = (
    "Make the revision render offline: when `op.get_context().as_sql` is true, emit the SQL "
    "without reading the database (as a batched backfill renders one representative batch), "
    "and keep data-dependent logic out of schema revisions. Until then, rehearse it on a copy "
    "of production to see what it does."
)


@dataclass
class Finding:
    rule: str
    source: str  # "runway" | "squawk"
    severity: str  # "note" | "medium" | "high"
    statement: str
    statement_index: int | None
    lock: str
    table: str
    message: str
    safe_way: str
    rewrites: bool = False
    scans: bool = False
    fails_on_data: bool = False
    breaks_app: bool = False
    accepted: dict[str, str] | None = None  # {"by", "comment", "source": "inline" | "lead"}
    line: int | None = None  # the line of the revision file (its op.* call) that produced it
    table_size: str = ""  # "~2,000,000 rows, 450 MB" when the size is known
    squawk_rules: list[str] = field(default_factory=list)  # squawk's hits merged into this one
    # Names an acceptance may use for this finding (the rule, squawk's names for it).
    aliases: tuple[str, ...] = field(default=(), repr=False, compare=False)
    # A blocking scan or rewrite: high on a big or unknown table, medium on a small one.
    size_sensitive: bool = field(default=False, repr=False, compare=False)

    @property
    def counts(self) -> bool:
        """Whether it weighs on the grade."""
        return self.accepted is None and self.severity != "note"

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "source": self.source,
            "severity": self.severity,
            "statement": self.statement,
            "statement_index": self.statement_index,
            "line": self.line,
            "lock": self.lock,
            "table": self.table,
            "table_size": self.table_size,
            "message": self.message,
            "safe_way": self.safe_way,
            "rewrites": self.rewrites,
            "scans": self.scans,
            "fails_on_data": self.fails_on_data,
            "breaks_app": self.breaks_app,
            "squawk_rules": list(self.squawk_rules),
            "accepted": dict(self.accepted) if self.accepted else None,
        }


@dataclass
class StatementInfo:
    index: int
    sql: str
    line: int  # 0-based, in the revision's rendered SQL
    in_transaction: bool
    lock: str
    tables: list[str]
    rewrites: bool
    scans: bool
    fails_on_data: bool = False
    breaks_app: bool = False
    data_migration: bool = False
    locks: dict[str, str] = field(default_factory=dict)  # table -> lock mode
    file_line: int | None = None  # the revision file's line that emitted it

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "sql": self.sql,
            "line": self.line,
            "file_line": self.file_line,
            "in_transaction": self.in_transaction,
            "lock": self.lock,
            "locks": dict(sorted(self.locks.items())),
            "tables": list(self.tables),
            "rewrites": self.rewrites,
            "scans": self.scans,
            "fails_on_data": self.fails_on_data,
            "breaks_app": self.breaks_app,
            "data_migration": self.data_migration,
        }


@dataclass
class RevisionReport:
    revision: str
    down_revisions: list[str]
    message: str
    file: str
    previewable: bool
    error: str
    sql: str
    statements: list[StatementInfo]
    findings: list[Finding]
    grade: str  # "low" | "medium" | "high"
    reasons: list[str]
    tables: list[str]
    failure: dict[str, Any] | None = None  # why it is not previewable: category, line, ...
    printed: str = ""  # what the revision printed while rendering (never part of the SQL)
    downgrade_sql: str = ""
    downgrade_error: str = ""  # why its downgrade does not render ("" when it does, or none)

    @property
    def counted(self) -> list[Finding]:
        return [f for f in self.findings if f.counts]

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "down_revisions": list(self.down_revisions),
            "message": self.message,
            "file": self.file,
            "grade": self.grade,
            "previewable": self.previewable,
            "error": self.error,
            "reasons": list(self.reasons),
            "tables": list(self.tables),
            "findings": [f.to_json() for f in self.findings],
            "statements": [s.to_json() for s in self.statements],
            "sql": self.sql,
            "failure": dict(self.failure) if self.failure else None,
            "printed": self.printed,
            "downgrade_sql": self.downgrade_sql,
            "downgrade_error": self.downgrade_error,
        }


# --- Which revisions ---


def revisions_between(
    tree: alembic.ScriptTree, from_revs: Sequence[str] | None, to_rev: str | None
) -> list[str]:
    """The revisions ``alembic upgrade`` would run from ``from_revs`` (None or empty: the
    base) to ``to_rev`` (None: every head), oldest first. Ids or branch labels; an unknown one
    raises ValueError."""
    start: list[str] = []
    for name in from_revs or ():
        rid = tree.resolve(name)
        if rid is None:
            raise ValueError(f"unknown revision {name!r}")
        start.append(rid)
    applied = tree.ancestors_of_all(start, include_self=True)
    if to_rev is None:
        wanted = set(tree.revisions)
    else:
        target = tree.resolve(to_rev)
        if target is None:
            raise ValueError(f"unknown revision {to_rev!r}")
        wanted = tree.ancestors(target, include_self=True)
    return [rid for rid in tree.oldest_first() if rid in wanted and rid not in applied]


# --- The analysis ---


def analyse(
    script_location: str | Path,
    tree: alembic.ScriptTree,
    revisions: list[str],
    *,
    pg_major: int | None = None,
    table_sizes: TableSizes | None = None,
    acceptances: Mapping[tuple[str, str], Mapping[str, str]] | None = None,
    pending: bool = False,
    render_timeout: float | None = None,
    store: Store | None = None,
    downgrade: bool = True,
) -> list[RevisionReport]:
    """One report per revision, in the order given (oldest first, as
    :func:`revisions_between` returns them).

    Each revision is judged as if applied to a production database already at its parent:
    tables earlier revisions created hold data of unknown size. A table created in the same
    revision is new (nothing the application runs uses it yet). With ``pending`` (a database
    says these revisions are all still to run on it), a table created by an earlier one of them
    is new too. What earlier revisions made of the schema (column types, checks) is carried
    either way.

    ``table_sizes`` (from the live database) turns a blocking scan or rewrite of a small table
    into a medium finding; without it, sizes are unknown and such findings stay high.
    ``acceptances`` maps (revision, rule) to a lead's {"by", "comment"}.

    With a ``store``, a revision whose key (:mod:`.risk_cache`: its file, what it carries from
    its parents, the server's major, the project, Runway's version) is stored is not analysed
    again; the others are, and are stored. Sizes and acceptances are applied on top either way.

    ``downgrade=False`` leaves the downgrades unrendered (a CI lint grades upgrades only); such
    analyses are not stored, as a stored one answers both.
    """
    wanted = [tree.revisions[rid] for rid in revisions]
    keyed = risk_cache.revision_keys(tree, wanted, pg_major=pg_major, pending=pending)
    done: dict[str, _Analysed] = {}
    if store is not None:
        found = store.load([k.key for k in keyed.values()])
        for rev in wanted:
            record = found.get(keyed[rev.id].key)
            analysed = _Analysed.from_record(record) if record is not None else None
            if analysed is not None:
                done[rev.id] = analysed
    if len(done) < len(wanted):
        _carried_schemas(store, wanted, keyed, done)
        timeout = render_timeout or alembic.render.DEFAULT_TIMEOUT
        fresh = _analyse_fresh(tree, wanted, done, pg_major, pending, timeout, downgrade)
        if store is not None and downgrade:
            store.save(
                {
                    keyed[rid].key: Stored(rid, a.report_record(), a.schema_record())
                    for rid, a in fresh.items()
                    if a.storable
                }
            )
        done.update(fresh)
    reports = []
    for rev in wanted:
        report = done[rev.id].report
        _accept(report, rev.id, _inline_in(keyed[rev.id].text), acceptances or {})
        _grade(report, table_sizes)
        reports.append(report)
    return reports


@dataclass
class Stored:
    """What a store keeps of one revision's analysis."""

    revision: str
    report: dict[str, Any]  # the report before acceptances and grading
    schema: dict[str, Any]  # the schema facts its children start from


class Store(Protocol):
    """Where analysed revisions are kept between runs, by key (Runway's database, in
    ``analysis.py``)."""

    def load(self, keys: Sequence[str]) -> Mapping[str, dict[str, Any]]:
        """The stored reports of those ``keys`` that are stored."""

    def load_schemas(self, keys: Sequence[str]) -> Mapping[str, dict[str, Any]]:
        """The stored schema facts of those ``keys`` that are stored."""

    def save(self, records: Mapping[str, Stored]) -> None: ...


@dataclass
class _Analysed:
    """One revision analysed: its report before acceptances and grading, and the schema facts
    its children start from (None until a child needs them). ``storable``: the same inputs
    always give the same result (not a time limit, a dead worker or a missing squawk, and no
    parent that was any of those)."""

    report: RevisionReport
    schema: rules.Schema | None
    storable: bool = True

    def report_record(self) -> dict[str, Any]:
        """The report as JSON, compact: each statement's text once (not once per finding), and
        no field that holds its default."""
        record = dataclasses.asdict(self.report)
        sqls = {st["index"]: st["sql"] for st in record["statements"]}
        for finding in record["findings"]:
            if finding["statement"] == sqls.get(finding["statement_index"], ""):
                finding["statement"] = None
        record["statements"] = [_compact(st, StatementInfo) for st in record["statements"]]
        record["findings"] = [_compact(f, Finding) for f in record["findings"]]
        return record

    def schema_record(self) -> dict[str, Any]:
        assert self.schema is not None
        return risk_cache.schema_to_json(self.schema)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> _Analysed | None:
        """New objects (the record may be read again), or None when the record does not fit:
        the revision is then analysed again."""
        try:
            data = dict(record)
            data["statements"] = [
                StatementInfo(
                    **{**st, "tables": list(st["tables"]), "locks": dict(st.get("locks", {}))}
                )
                for st in data["statements"]
            ]
            sqls = {st.index: st.sql for st in data["statements"]}
            data["findings"] = [
                Finding(
                    **{
                        **f,
                        "statement": sqls.get(f["statement_index"], "")
                        if f["statement"] is None
                        else f["statement"],
                        "aliases": tuple(f.get("aliases", ())),
                        "squawk_rules": list(f.get("squawk_rules", ())),
                        "accepted": None,
                    }
                )
                for f in data["findings"]
            ]
            for name in ("down_revisions", "reasons", "tables"):
                data[name] = list(data[name])
            data["failure"] = dict(data["failure"]) if data["failure"] else None
            return cls(RevisionReport(**data), None)
        except (AttributeError, KeyError, TypeError, ValueError):
            return None


def _compact(data: dict[str, Any], cls: type) -> dict[str, Any]:
    """``data`` (a dataclass as a dict) without the fields that hold their default."""
    defaults = _DEFAULTS.get(cls)
    if defaults is None:
        defaults = _DEFAULTS[cls] = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory()
    return {k: v for k, v in data.items() if k not in defaults or v != defaults[k]}


_DEFAULTS: dict[type, dict[str, Any]] = {}


def _carried_from(rev: alembic.Revision, order: Mapping[str, int]) -> list[str]:
    """The parents and dependencies whose schema facts ``rev`` starts from: those earlier in
    the analysed range (as the keys say)."""
    here = order[rev.id]
    return [p for p in (*rev.parents, *rev.dependencies) if order.get(p, here) < here]


def _carried_schemas(
    store: Store | None,
    wanted: list[alembic.Revision],
    keyed: Mapping[str, risk_cache.Keyed],
    done: dict[str, _Analysed],
) -> None:
    """Read the schema facts of the stored revisions that revisions to analyse again start
    from; a stored revision whose facts cannot be read is analysed again too."""
    order = {rev.id: number for number, rev in enumerate(wanted)}
    while True:
        needed = {
            p
            for rev in wanted
            if rev.id not in done
            for p in _carried_from(rev, order)
            if p in done and done[p].schema is None
        }
        if not needed:
            return
        loaded = store.load_schemas([keyed[p].key for p in needed]) if store else {}
        for p in needed:
            data = loaded.get(keyed[p].key)
            try:
                done[p].schema = risk_cache.schema_from_json(data) if data is not None else None
            except (AttributeError, IndexError, KeyError, TypeError, ValueError):
                done[p].schema = None  # a shape from another version
            if done[p].schema is None:
                del done[p]


# A chain needs twice this many revisions before a second render worker pays for its start.
REVISIONS_PER_RENDER_WORKER = 60


def _render(
    tree: alembic.ScriptTree, revisions: list[alembic.Revision], timeout: float, downgrade: bool
) -> tuple[dict[str, alembic.render.RevisionRender], alembic.render.EnvFacts]:
    """Every revision rendered offline (and its downgrade). Each file renders on its own, so a
    long chain is split between two render workers when there are cores for them."""
    workers = min(2, os.cpu_count() or 1, len(revisions) // REVISIONS_PER_RENDER_WORKER) or 1
    if workers == 1:
        return alembic.render_offline(tree, revisions, downgrade=downgrade, timeout=timeout)
    size = -(-len(revisions) // workers)
    chunks = [revisions[i : i + size] for i in range(0, len(revisions), size)]
    with ThreadPoolExecutor(len(chunks)) as pool:
        parts = list(
            pool.map(
                lambda chunk: alembic.render_offline(
                    tree, chunk, downgrade=downgrade, timeout=timeout
                ),
                chunks,
            )
        )
    rendered: dict[str, alembic.render.RevisionRender] = {}
    for part, _ in parts:
        rendered.update(part)
    return rendered, parts[0][1]


def _analyse_fresh(
    tree: alembic.ScriptTree,
    wanted: list[alembic.Revision],
    done: Mapping[str, _Analysed],
    pg_major: int | None,
    pending: bool,
    timeout: float,
    downgrade: bool = True,
) -> dict[str, _Analysed]:
    """The revisions of ``wanted`` not in ``done``: rendered, squawk's one run over all of
    them started, Runway's rules run on each while squawk works, then the two merged."""
    todo = [rev for rev in wanted if rev.id not in done]
    rendered, facts = _render(tree, todo, timeout, downgrade)
    sqls = {r.id: rendered[r.id].upgrade.sql for r in todo if rendered[r.id].upgrade.ok}
    batch: squawk.Batch | squawk.SquawkError
    try:
        batch = squawk.Batch(sqls, pg_version=str(pg_major) if pg_major else None)
    except squawk.SquawkError as exc:
        batch = exc
    order = {rev.id: number for number, rev in enumerate(wanted)}
    schemas = {rid: a.schema for rid, a in done.items() if a.schema is not None}
    unstorable: set[str] = set()
    analyses: dict[str, rules.Analysis] = {}
    out: dict[str, _Analysed] = {}
    for rev in todo:
        parents = _carried_from(rev, order)
        before = rules.Schema.merged(schemas[p] for p in parents)
        if not pending:
            before.new_tables.clear()
        result = rendered[rev.id]
        storable = not any(p in unstorable for p in parents)
        if result.upgrade.failure is not None:
            report = _not_previewable(rev, result.upgrade.failure, facts)
            schemas[rev.id] = before
            storable = storable and not _transient(result.upgrade.failure)
        else:
            analyses[rev.id] = rules.analyse_sql(
                result.upgrade.sql, revision=rev.id, schema=before, pg_major=pg_major
            )
            schemas[rev.id] = analyses[rev.id].schema
            report = _empty_report(rev)
        report.printed = result.upgrade.printed
        if result.downgrade is not None:
            report.downgrade_sql = result.downgrade.sql
            if result.downgrade.failure is not None:
                report.downgrade_error = _failure_text(result.downgrade.failure)
                storable = storable and not _transient(result.downgrade.failure)
        if not storable:
            unstorable.add(rev.id)
        out[rev.id] = _Analysed(report, schemas[rev.id], storable)
    try:
        hits = batch.result() if isinstance(batch, squawk.Batch) else {}
        failed = batch.failed if isinstance(batch, squawk.Batch) else {}
    except squawk.SquawkError as exc:
        batch, hits, failed = exc, {}, {}
    for rid, analysis in analyses.items():
        lint = batch if isinstance(batch, squawk.SquawkError) else failed.get(rid, hits[rid])
        _fill(out[rid].report, rendered[rid].upgrade, analysis, lint)
        if isinstance(lint, squawk.SquawkError):
            out[rid].storable = False  # squawk's findings are missing: never kept
    return out


def _transient(failure: alembic.Failure) -> bool:
    """A failure the same file may not meet next time: a time limit (a busy machine), or the
    worker killed under it (out of memory)."""
    return failure.category == "timed_out" or failure.message.startswith("the render worker died")


def _empty_report(rev: alembic.Revision) -> RevisionReport:
    return RevisionReport(
        revision=rev.id,
        down_revisions=list(rev.down_revisions),
        message=rev.message,
        file=rev.path,
        previewable=True,
        error="",
        sql="",
        statements=[],
        findings=[],
        grade="low",
        reasons=[],
        tables=[],
    )


def _fill(
    report: RevisionReport,
    rendered: alembic.render.Rendered,
    analysis: rules.Analysis,
    hits: list[squawk.SquawkHit] | squawk.SquawkError,
) -> None:
    """A rendered revision's report: its statements, Runway's findings and squawk's ``hits``
    on its SQL (or why squawk could not lint it), merged."""
    statements = [
        StatementInfo(
            index=st.index,
            sql=st.sql,
            line=st.line,
            in_transaction=st.in_transaction,
            lock=st.lock,
            tables=list(st.tables),
            rewrites=st.rewrites,
            scans=st.scans,
            fails_on_data=st.fails_on_data,
            breaks_app=st.breaks_app,
            data_migration=st.data_migration,
            locks=dict(st.locks),
            file_line=rendered.file_line(st.line),
        )
        for st in analysis.statements
    ]
    file_lines = {st.index: st.file_line for st in statements}
    findings: list[Finding] = []
    by_statement: dict[int, list[Finding]] = {}
    for st in analysis.statements:
        for rf in st.findings:
            finding = Finding(
                rule=rf.rule,
                source="runway",
                severity=rf.severity,
                statement=st.sql,
                statement_index=st.index,
                lock=rf.lock,
                table=rf.table,
                message=rf.message,
                safe_way=rf.safe_way,
                rewrites=rf.rewrites,
                scans=rf.scans,
                fails_on_data=rf.fails_on_data,
                breaks_app=rf.breaks_app,
                line=file_lines.get(st.index),
                aliases=(rf.rule, *rf.squawk_rules),
                size_sensitive=rf.size_sensitive and rf.severity == "high",
            )
            findings.append(finding)
            by_statement.setdefault(st.index, []).append(finding)
    squawked = _squawk_findings(analysis.statements, by_statement, hits)
    for finding in squawked:
        if finding.statement_index is not None:
            finding.line = file_lines.get(finding.statement_index)
    findings += squawked
    findings.sort(key=_order)
    report.sql = rendered.sql
    report.statements = statements
    report.findings = findings
    report.tables = sorted({t for st in analysis.statements for t in st.tables})


def _order(f: Finding) -> tuple[int, int, str, str, str]:
    index = -1 if f.statement_index is None else f.statement_index
    return (index, -_RANK[f.severity], f.source, f.rule, f.message)


def _squawk_findings(
    statements: list[rules.Statement],
    by_statement: dict[int, list[Finding]],
    hits: list[squawk.SquawkHit] | squawk.SquawkError,
) -> list[Finding]:
    """squawk's hits: merged into Runway's finding for the same hazard, notes for style, and
    findings of their own for what Runway's rules do not cover."""
    if isinstance(hits, squawk.SquawkError):
        exc = hits
        return [
            Finding(
                rule="squawk-unavailable",
                source="squawk",
                severity="note",
                statement="",
                statement_index=None,
                lock="",
                table="",
                message=f"squawk did not lint this revision: {exc} Runway's own rules still ran.",
                safe_way="Install squawk-cli in Runway's environment.",
            )
        ]
    out: list[Finding] = []
    own: dict[tuple[int, str], Finding] = {}
    for hit in hits:
        st = next((s for s in statements if s.line <= hit.line <= s.end_line), None)
        if st is None:
            continue  # Alembic's bookkeeping, BEGIN/COMMIT
        mine = by_statement.get(st.index, [])
        same = next((f for f in mine if hit.rule in f.aliases), None)
        if same is not None:
            if hit.rule not in same.squawk_rules:
                same.squawk_rules.append(hit.rule)
            continue
        if (st.index, hit.rule) in own:
            continue
        if hit.rule in _NOTES:
            severity, why = "note", _NOTES[hit.rule]
        elif hit.rule in _COVERED:
            severity = "note"
            why = "Runway's own analysis of this statement finds no such risk" + (
                " (its table is new: the running application does not use it yet)"
                if st.tables and not st.lock
                else ""
            )
        else:
            severity, why = "medium", ""
        finding = Finding(
            rule=hit.rule,
            source="squawk",
            severity=severity,
            statement=st.sql,
            statement_index=st.index,
            lock=st.lock,
            table=st.tables[0] if st.tables else "",
            message=hit.message + (f" (Note: {why}.)" if why else ""),
            safe_way=hit.help,
            rewrites=st.rewrites and severity != "note",
            scans=st.scans and severity != "note",
            aliases=(hit.rule,),
        )
        own[(st.index, hit.rule)] = finding
        out.append(finding)
    return out


_CATEGORY_TITLES = {
    "imports_application": "imports application code",
    "missing_package": "needs a package that is not installed",
    "reads_database": "reads the database",
    "raises": "raises an error",
    "unknown_operation": "uses an unknown operation",
    "timed_out": "timed out",
}


def _failure_text(failure: alembic.Failure) -> str:
    where = f" (line {failure.line})" if failure.line else ""
    return f"{_CATEGORY_TITLES.get(failure.category, failure.category)}{where}: {failure.message}"


def _not_previewable(
    rev: alembic.Revision, failure: alembic.Failure, facts: alembic.render.EnvFacts
) -> RevisionReport:
    """A revision that cannot be rendered offline: reviewed by hand (medium), never low. One
    that raises fails when applied too: high."""
    reason = _failure_text(failure)
    if failure.category == "unknown_operation" and facts.missing:
        reason += (
            f"; env.py imports {', '.join(facts.missing)}, not installed in Runway's "
            "environment: install it there so its operations exist"
        )
    if failure.category == "raises":
        finding = Finding(
            rule="revision-raises",
            source="runway",
            severity="high",
            statement="",
            statement_index=None,
            lock="",
            table="",
            message=(
                f"The revision raises when it runs ({failure.message}): applied to a database it "
                "fails the same way, and its transaction rolls back."
            ),
            safe_way="Fix the revision; render it with `manage.py lint_migrations` until it "
            "renders.",
            line=failure.line,
            aliases=("revision-raises",),
        )
    else:
        finding = Finding(
            rule="not-previewable",
            source="runway",
            severity="medium",
            statement="",
            statement_index=None,
            lock="",
            table="",
            message=(
                f"The revision's SQL cannot be rendered offline: it {reason.split(':', 1)[0]}"
                f"{'' if ':' not in reason else ':' + reason.split(':', 1)[1]}. Review it by "
                "hand."
            ),
            safe_way=NOT_PREVIEWABLE_SAFE_WAY,
            line=failure.line,
            aliases=("not-previewable",),
        )
    return RevisionReport(
        revision=rev.id,
        down_revisions=list(rev.down_revisions),
        message=rev.message,
        file=rev.path,
        previewable=False,
        error=reason,
        sql="",
        statements=[],
        findings=[finding],
        grade="medium",
        reasons=[],
        tables=[],
        failure=failure.to_json(),
    )


# --- Acceptances ---


@dataclass
class _Inline:
    rules: list[str]
    comment: str
    line: int


def _inline_in(text: str) -> list[_Inline]:
    """``# runway: accept RULE[, RULE] -- reason`` comments in a revision file's text."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _ACCEPT.search(line)
        if match is None:
            continue
        names, _, comment = match.group("rest").partition("--")
        found.append(
            _Inline(
                [n for n in re.split(r"[\s,]+", names.strip()) if n],
                comment.strip(),
                number,
            )
        )
    return found


def _accept(
    report: RevisionReport,
    revision: str,
    inline: list[_Inline],
    leads: Mapping[tuple[str, str], Mapping[str, str]],
) -> None:
    for finding in report.findings:
        for name in finding.aliases or (finding.rule,):
            lead = leads.get((revision, name))
            if lead is not None:
                finding.accepted = {
                    **{k: str(v) for k, v in lead.items()},
                    "by": str(lead.get("by", "")),
                    "comment": str(lead.get("comment", "")),
                    "source": "lead",
                }
                break
        if finding.accepted is not None:
            continue
        for ack in inline:
            if ack.comment and any(name in finding.aliases for name in ack.rules):
                finding.accepted = {
                    "by": f"comment in {report.file} (line {ack.line})",
                    "comment": ack.comment,
                    "source": "inline",
                }
                break
    for ack in inline:
        if not ack.comment:
            report.findings.append(
                Finding(
                    rule="acceptance-without-reason",
                    source="runway",
                    severity="note",
                    statement="",
                    statement_index=None,
                    lock="",
                    table="",
                    message=(
                        f"{report.file} line {ack.line} accepts "
                        f"{', '.join(ack.rules) or 'nothing'} without a reason, so it is ignored."
                    ),
                    safe_way="Write the reason after `--`: "
                    "`# runway: accept RULE -- why it is safe here`.",
                )
            )
    report.findings.sort(key=_order)


# --- Grading ---


def _grade(report: RevisionReport, sizes: TableSizes | None) -> None:
    for finding in report.findings:
        known = _size_of(finding.table, sizes)
        if known is not None:
            finding.table_size = _describe(*known)
        if not finding.size_sensitive:
            continue
        if known is not None and 0 <= known[0] < SMALL_ROWS and known[1] < SMALL_BYTES:
            finding.severity = "medium"
            finding.message += (
                f" {finding.table} is small (under {SMALL_ROWS:,} rows and "
                f"{SMALL_BYTES // 2**20} MB), so the lock is brief."
            )
        elif finding.table:
            finding.table_size = finding.table_size or (
                "size unknown (no database)" if sizes is None else "not found in the database"
            )
    worst = max((_RANK[f.severity] for f in report.findings if f.counts), default=0)
    grade = GRADES[worst]
    if not report.previewable and grade == "low":
        grade = "medium"
    report.grade = grade
    report.reasons = _reasons(report)


def _size_of(table: str, sizes: TableSizes | None) -> tuple[int, int] | None:
    if not sizes or not table:
        return None
    return sizes.get(table) or sizes.get(table.removeprefix("public."))


def _describe(rows: int, size: int) -> str:
    count = f"~{rows:,} rows" if rows >= 0 else "rows unknown"
    return f"{count}, {_bytes(size)}"


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            if unit == "bytes":
                return f"{int(value)} bytes"
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
        value /= 1024
    return f"{size} bytes"  # pragma: no cover


def _reasons(report: RevisionReport) -> list[str]:
    reasons = []
    if not report.previewable:
        reasons.append(f"not previewable: {report.error}")
    for f in report.findings:
        if f.counts and f.rule not in ("not-previewable",):
            where = f" on {f.table}" if f.table else ""
            size = f" ({f.table}: {f.table_size})" if f.table_size and f.table else ""
            lock = f", {f.lock}" if f.lock else ""
            reasons.append(f"{f.severity}: {f.rule}{where}{lock}{size}: {_first(f.message)}")
    for f in report.findings:
        if f.accepted:
            reasons.append(
                f"accepted ({f.accepted['source']}): {f.severity} {f.rule} — "
                f"{f.accepted['comment']} ({f.accepted['by']})"
            )
    notes = sum(1 for f in report.findings if f.severity == "note" and not f.accepted)
    if not reasons:
        reasons.append(
            f"nothing risky ({notes} note{'s' if notes != 1 else ''})" if notes else "nothing risky"
        )
    elif notes:
        reasons.append(f"{notes} note{'s' if notes != 1 else ''} (not graded)")
    return reasons


def _first(message: str) -> str:
    head, dot, _ = message.partition(". ")
    return head + ("." if dot else "")


# --- Pinning ---


def report_hash(reports: Sequence[RevisionReport]) -> str:
    """sha256 of what a reviewer approved: each revision's SQL, grade and findings (with their
    acceptances). Estimated table sizes are left out: they drift with every write, and the
    grade they lead to is in."""
    pinned = [
        {
            "revision": r.revision,
            "previewable": r.previewable,
            "error": r.error,
            "grade": r.grade,
            "sql": r.sql,
            "findings": [
                {k: v for k, v in f.to_json().items() if k != "table_size"} for f in r.findings
            ],
        }
        for r in reports
    ]
    canonical = json.dumps(pinned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
