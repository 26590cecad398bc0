"""dashboard.schema.risk: revisions rendered offline one at a time, linted by Runway's rules and
squawk, graded. The demo project (migrations_target) and throwaway Alembic projects written
into tmp_path; no database except where table sizes are read from a real one."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest
from helpers import ROOT

from dashboard.lib import alembic, pg
from dashboard.schema import risk
from devstack.cluster import Cluster

TARGET = ROOT / "migrations_target"
PENDING = ["0017", "0018", "0019", "0020"]

ENV_PY = """\
from alembic import context

if not context.is_offline_mode():
    raise RuntimeError("this project only renders SQL")
context.configure(
    url=context.config.get_main_option("sqlalchemy.url"),
    literal_binds=True,
    dialect_opts={"paramstyle": "named"},
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
"""


def write(folder: Path, rev: str, down: str | tuple[str, ...] | None, upgrade: str) -> Path:
    """A revision whose upgrade() body is ``upgrade``."""
    (folder / "versions").mkdir(parents=True, exist_ok=True)
    (folder / "env.py").write_text(ENV_PY)
    path = folder / "versions" / f"{rev}_step.py"
    path.write_text(
        f'"""step {rev}"""\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f"revision = {rev!r}\ndown_revision = {down!r}\n"
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade():\n" + textwrap.indent(textwrap.dedent(upgrade).strip(), "    ") + "\n\n\n"
        "def downgrade():\n    pass\n"
    )
    return path


def project(tmp_path: Path, *revisions: tuple[str, str]) -> Path:
    """A linear project: a base revision creating ``users``, then each (rev, upgrade body)."""
    folder = tmp_path / "app"
    write(
        folder,
        "0001",
        None,
        'op.create_table("users", sa.Column("id", sa.BigInteger, primary_key=True), '
        'sa.Column("email", sa.Text))',
    )
    down = "0001"
    for rev, body in revisions:
        write(folder, rev, down, body)
        down = rev
    return folder


def analyse(folder: Path, from_revs: list[str] | None = None, **kwargs: object) -> list:
    tree = alembic.read_scripts(folder)
    return risk.analyse(folder, tree, risk.revisions_between(tree, from_revs, None), **kwargs)  # type: ignore[arg-type]


def by_rev(reports: list[risk.RevisionReport]) -> dict[str, risk.RevisionReport]:
    return {r.revision: r for r in reports}


def counted(report: risk.RevisionReport) -> list[tuple[str, str]]:
    return [(f.rule, f.severity) for f in report.findings if f.counts]


# --- The demo project ---


@pytest.fixture(scope="module")
def demo() -> dict[str, risk.RevisionReport]:
    tree = alembic.read_scripts(TARGET)
    assert risk.revisions_between(tree, ["0016"], None) == PENDING
    return by_rev(risk.analyse(TARGET, tree, PENDING))


def test_the_demo_plain_create_index_is_high_with_share_on_users(demo: dict) -> None:
    report = demo["0020"]

    assert report.grade == "high"
    assert counted(report) == [("create-index-blocking", "high")]
    (finding,) = report.counted
    assert (finding.lock, finding.table, finding.source) == ("SHARE", "users", "runway")
    assert "CREATE INDEX CONCURRENTLY ix_users_email ON users (email)" in finding.safe_way
    assert "autocommit_block" in finding.safe_way
    assert finding.table_size == "size unknown (no database)"
    assert any("users: size unknown" in reason for reason in report.reasons)


def test_squawk_and_runway_count_the_same_hazard_once(demo: dict) -> None:
    findings = demo["0020"].findings

    index = [f for f in findings if "concurrent" in f.rule or "create-index" in f.rule]
    assert [f.rule for f in index] == ["create-index-blocking"]
    assert index[0].squawk_rules == ["require-concurrent-index-creation"]


def test_the_demo_constant_default_is_not_high(demo: dict) -> None:
    report = demo["0017"]

    assert report.grade == "low"
    assert counted(report) == []
    assert report.statements[0].lock == "ACCESS EXCLUSIVE"
    assert not report.statements[0].rewrites


def test_the_demo_expand_step_is_low_with_a_style_note(demo: dict) -> None:
    report = demo["0018"]

    assert report.grade == "low"
    notes = {f.rule for f in report.findings if f.severity == "note"}
    assert "prefer-text-field" in notes


def test_the_demo_batched_backfill_is_a_data_migration_not_high(demo: dict) -> None:
    report = demo["0019"]

    assert report.grade == "medium"
    assert counted(report) == [("data-migration", "medium")]
    (statement,) = report.statements
    assert not statement.in_transaction
    assert statement.data_migration
    assert report.statements[0].sql.startswith("UPDATE users SET email_new = email WHERE")


def test_the_demo_notes_are_style_and_timeouts_only(demo: dict) -> None:
    notes = [f for r in demo.values() for f in r.findings if f.severity == "note"]

    assert {f.rule for f in notes} <= {
        "prefer-text-field",
        "require-lock-timeout",
        "require-statement-timeout",
    }
    assert all(f.source == "squawk" for f in notes)


def test_the_whole_chain_lints_without_a_database_as_if_each_revision_met_production() -> None:
    tree = alembic.read_scripts(TARGET)
    revisions = risk.revisions_between(tree, None, None)
    reports = by_rev(risk.analyse(TARGET, tree, revisions))

    assert list(reports) == [f"{i:04d}" for i in range(1, 21)]
    assert all(r.previewable for r in reports.values())
    # Without a database each revision meets a production database at its parent: users,
    # created by 0002, holds data of unknown size by the time 0020 indexes it.
    index = next(f for f in reports["0020"].findings if f.rule == "create-index-blocking")
    assert index.severity == "high" and reports["0020"].grade == "high"
    assert "created by revision" not in index.message
    # A table created in the revision itself is new: 0002's CREATE TABLE users is not risky.
    assert reports["0002"].grade == "low", reports["0002"].reasons
    # Pending on a database (every one of them still to run), the earlier ones' tables are new.
    pending = by_rev(risk.analyse(TARGET, tree, revisions, pending=True))
    index = next(f for f in pending["0020"].findings if f.rule == "create-index-blocking")
    assert index.severity == "note" and "created by revision 0002" in index.message


# --- Sizes ---


def test_a_small_table_makes_a_blocking_index_medium_with_its_size(demo: dict) -> None:
    tree = alembic.read_scripts(TARGET)
    (report,) = risk.analyse(TARGET, tree, ["0020"], table_sizes={"users": (200, 98_304)})

    assert report.grade == "medium"
    assert report.counted[0].table_size == "~200 rows, 96 kB"
    assert any("users: ~200 rows, 96 kB" in reason for reason in report.reasons)


def test_a_big_table_stays_high_with_its_size_in_the_reasons() -> None:
    tree = alembic.read_scripts(TARGET)
    sizes = {"users": (2_000_000, 450 * 2**20)}
    (report,) = risk.analyse(TARGET, tree, ["0020"], table_sizes=sizes, pg_major=15)

    assert report.grade == "high"
    assert any("users: ~2,000,000 rows, 450 MB" in reason for reason in report.reasons)


def test_a_table_missing_from_the_sizes_is_not_assumed_small() -> None:
    tree = alembic.read_scripts(TARGET)
    (report,) = risk.analyse(TARGET, tree, ["0020"], table_sizes={"payments": (10, 8192)})

    assert report.grade == "high"
    assert report.counted[0].table_size == "not found in the database"


def test_table_sizes_reads_rows_and_bytes_from_a_real_database(pg_cluster: Cluster) -> None:
    name = f"sizes_{time.monotonic_ns() % 10**8}"
    pg_cluster.create_database(name, replace=True)
    try:
        with psycopg.connect(pg_cluster.dsn(name), autocommit=True) as conn:
            conn.execute("CREATE TABLE users (id int PRIMARY KEY, email text)")
            conn.execute("INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 500) g")
            conn.execute("CREATE SCHEMA billing")
            conn.execute("CREATE TABLE billing.invoices (id int)")
            conn.execute("INSERT INTO billing.invoices SELECT generate_series(1, 30)")
            conn.execute("ANALYZE billing.invoices")
            sizes = pg.table_sizes(conn)
    finally:
        pg_cluster.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

    assert sizes["users"][0] == 500  # never analysed: counted
    assert sizes["users"][1] > 8192  # heap and the primary key's index
    assert sizes["billing.invoices"][0] == 30
    assert "alembic_version" not in sizes


# --- Not previewable ---


def test_a_revision_that_reads_the_database_is_not_previewable_and_not_low(
    tmp_path: Path,
) -> None:
    folder = project(
        tmp_path,
        ("0002", 'rows = op.get_bind().execute(sa.text("SELECT id FROM users")).fetchall()'),
        ("0003", 'raise RuntimeError("needs the production data")'),
        ("0004", 'op.add_column("users", sa.Column("name", sa.Text))'),
    )
    reports = by_rev(analyse(folder, ["0001"]))

    reads = reports["0002"]
    assert not reads.previewable and reads.grade == "medium"
    assert [f.rule for f in reads.findings] == ["not-previewable"]
    assert reads.reasons[0].startswith("not previewable: reads the database (line 12): it tried")
    assert reads.failure["category"] == "reads_database"
    assert reads.failure["query"] == "SELECT id FROM users"
    assert reads.sql == ""  # its partial SQL is never shown as the result
    raises = reports["0003"]
    assert not raises.previewable and raises.grade == "high"  # it fails online too
    assert [f.rule for f in raises.findings] == ["revision-raises"]
    assert "RuntimeError: needs the production data" in raises.error
    assert raises.findings[0].line == 12
    assert reports["0004"].previewable and reports["0004"].grade == "low"


def test_accepting_a_not_previewable_revision_never_makes_it_low(tmp_path: Path) -> None:
    folder = project(tmp_path, ("0002", 'op.get_bind().execute(sa.text("SELECT 1")).scalar()'))
    accepted = {("0002", "not-previewable"): {"by": "leo", "comment": "ran it on staging"}}
    (report,) = analyse(folder, ["0001"], acceptances=accepted)

    assert report.findings[0].accepted == {
        "by": "leo",
        "comment": "ran it on staging",
        "source": "lead",
    }
    assert report.grade == "medium"


# --- Acceptances ---

INDEX = 'op.create_index("ix_users_email", "users", ["email"])'


def test_an_inline_acknowledgement_accepts_a_rule_and_keeps_the_finding(tmp_path: Path) -> None:
    folder = project(
        tmp_path,
        (
            "0002",
            "# runway: accept require-concurrent-index-creation -- built off-hours, "
            f"table has 50 rows\n{INDEX}",
        ),
    )
    (report,) = analyse(folder, ["0001"])

    (finding,) = [f for f in report.findings if f.rule == "create-index-blocking"]
    assert finding.severity == "high"
    assert finding.accepted == {
        "by": "comment in versions/0002_step.py (line 12)",
        "comment": "built off-hours, table has 50 rows",
        "source": "inline",
    }
    assert report.grade == "low"
    assert any(
        r.startswith("accepted (inline): high create-index-blocking") for r in report.reasons
    )


def test_an_inline_acknowledgement_counts_in_a_project_registered_as_its_alembic_ini(
    tmp_path: Path,
) -> None:
    accepted = f"# runway: accept create-index-blocking -- built off-hours\n{INDEX}"
    folder = project(tmp_path, ("0002", accepted))
    elsewhere = write(tmp_path / "billing", "0003", "0002", accepted.replace("email", "name"))
    ini = tmp_path / "alembic.ini"
    ini.write_text(
        f"[alembic]\nscript_location = {folder.name}\npath_separator = space\n"
        "version_locations = %(here)s/app/versions %(here)s/billing/versions\n"
    )
    tree = alembic.read_scripts(ini)
    assert tree.revisions["0002"].path == "versions/0002_step.py"
    assert tree.revisions["0003"].path == elsewhere.as_posix()

    reports = risk.analyse(ini, tree, ["0002", "0003"])

    for report in reports:
        (finding,) = [f for f in report.findings if f.rule == "create-index-blocking"]
        assert finding.accepted is not None and finding.accepted["source"] == "inline"


def test_an_inline_acknowledgement_takes_runway_rule_names_too(tmp_path: Path) -> None:
    folder = project(
        tmp_path,
        ("0002", f"# runway: accept create-index-blocking, drop-column -- tiny table\n{INDEX}"),
    )
    (report,) = analyse(folder, ["0001"])

    assert report.grade == "low"
    assert report.findings[0].accepted is not None


def test_an_acknowledgement_without_a_reason_is_ignored_with_a_note(tmp_path: Path) -> None:
    folder = project(tmp_path, ("0002", f"# runway: accept create-index-blocking\n{INDEX}"))
    (report,) = analyse(folder, ["0001"])

    assert report.grade == "high"
    note = next(f for f in report.findings if f.rule == "acceptance-without-reason")
    assert note.severity == "note"


def test_a_leads_acceptance_takes_the_finding_out_of_the_grade(demo: dict) -> None:
    tree = alembic.read_scripts(TARGET)
    accepted = {("0020", "create-index-blocking"): {"by": "leo", "comment": "50 users"}}
    (report,) = risk.analyse(TARGET, tree, ["0020"], acceptances=accepted)

    assert report.grade == "low"
    assert report.findings[0].accepted == {"by": "leo", "comment": "50 users", "source": "lead"}


# --- Noise ---


def test_style_rules_are_notes_that_never_raise_the_grade(tmp_path: Path) -> None:
    folder = project(
        tmp_path,
        (
            "0002",
            'op.add_column("users", sa.Column("nickname", sa.String(40)))\n'
            'op.add_column("users", sa.Column("score", sa.Integer))\n'
            'op.add_column("users", sa.Column("seen_at", sa.DateTime))',
        ),
    )
    (report,) = analyse(folder, ["0001"])

    notes = {f.rule for f in report.findings}
    assert {"prefer-text-field", "prefer-bigint-over-int", "prefer-timestamp-tz"} <= notes
    assert {f.severity for f in report.findings} == {"note"}
    assert report.grade == "low"
    assert report.reasons == [f"nothing risky ({len(report.findings)} notes)"]


def test_without_squawk_runways_rules_still_grade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    tree = alembic.read_scripts(TARGET)
    (report,) = risk.analyse(TARGET, tree, ["0020"])

    assert report.grade == "high"
    assert [f.rule for f in report.findings] == ["squawk-unavailable", "create-index-blocking"]


def test_a_revision_on_a_table_an_earlier_pending_revision_created_is_not_risky(
    tmp_path: Path,
) -> None:
    folder = project(
        tmp_path,
        ("0002", 'op.create_table("events", sa.Column("id", sa.BigInteger, primary_key=True))'),
        ("0003", 'op.create_index("ix_events_id", "events", ["id"])'),
    )

    assert by_rev(analyse(folder, ["0001"], pending=True))["0003"].grade == "low"
    # Without a database saying 0002 is still pending, events may be in use by then.
    assert by_rev(analyse(folder, ["0001"]))["0003"].grade == "high"
    assert by_rev(analyse(folder, ["0002"], pending=True))["0003"].grade == "high"


# --- Rendering one revision ---


def test_a_merge_revision_renders_only_its_own_sql(tmp_path: Path) -> None:
    folder = project(tmp_path)
    write(folder, "0002", "0001", 'op.add_column("users", sa.Column("a", sa.Text))')
    write(folder, "0003", "0001", 'op.add_column("users", sa.Column("b", sa.Text))')
    write(folder, "0004", ("0002", "0003"), 'op.execute("UPDATE users SET a = b WHERE id < 10")')
    tree = alembic.read_scripts(folder)

    rendered, _ = alembic.render_offline(tree, [tree.revisions["0004"]])
    sql = rendered["0004"].upgrade.sql

    assert "UPDATE users SET a = b WHERE id < 10" in sql
    assert "ADD COLUMN" not in sql
    # Only the version bookkeeping joins the two parents.
    assert "DELETE FROM alembic_version WHERE alembic_version.version_num = '0003'" in sql
    assert "SET version_num='0004' WHERE alembic_version.version_num = '0002'" in sql
    reports = by_rev(analyse(folder, ["0001"]))
    assert reports["0004"].down_revisions == ["0002", "0003"]
    assert counted(reports["0004"]) == [("data-migration", "medium")]


def test_a_root_revision_renders_with_alembics_version_table_left_out_of_the_analysis(
    tmp_path: Path,
) -> None:
    folder = project(tmp_path)
    tree = alembic.read_scripts(folder)

    rendered, _ = alembic.render_offline(tree, [tree.revisions["0001"]])
    assert "CREATE TABLE alembic_version" in rendered["0001"].upgrade.sql
    (report,) = analyse(folder)
    assert [s.sql.split("(")[0].strip() for s in report.statements] == ["CREATE TABLE users"]
    assert report.tables == ["users"]


def test_rendering_a_failing_revision_names_its_exception_and_line(tmp_path: Path) -> None:
    folder = project(tmp_path, ("0002", 'raise RuntimeError("boom")'))
    tree = alembic.read_scripts(folder)

    rendered, _ = alembic.render_offline(tree, [tree.revisions["0002"]])
    failure = rendered["0002"].upgrade.failure
    assert failure is not None and failure.category == "raises"
    assert failure.message.startswith("RuntimeError: boom") and failure.line == 12


# --- Which revisions, the JSON, the hash ---


def test_revisions_between_follows_the_graph() -> None:
    tree = alembic.read_scripts(TARGET)

    assert risk.revisions_between(tree, ["0016"], "0018") == ["0017", "0018"]
    assert risk.revisions_between(tree, None, "0002") == ["0001", "0002"]
    assert risk.revisions_between(tree, ["0020"], None) == []
    with pytest.raises(ValueError, match="unknown revision 'nope'"):
        risk.revisions_between(tree, ["nope"], None)
    with pytest.raises(ValueError, match="unknown revision 'nope'"):
        risk.revisions_between(tree, None, "nope")


def test_the_json_holds_what_pages_and_pipelines_read(demo: dict) -> None:
    data = json.loads(json.dumps(demo["0020"].to_json()))

    assert {"revision", "grade", "findings", "previewable", "error", "reasons", "tables"} <= set(
        data
    )
    assert data["statements"][0]["lock"] == "SHARE"
    finding = data["findings"][0]
    for key in ("rule", "severity", "statement", "lock", "table", "message", "safe_way"):
        assert finding[key], key
    assert finding["accepted"] is None


def test_the_report_hash_is_stable_and_ignores_size_drift() -> None:
    tree = alembic.read_scripts(TARGET)

    def hash_with(**kwargs: object) -> str:
        return risk.report_hash(risk.analyse(TARGET, tree, PENDING, **kwargs))  # type: ignore[arg-type]

    plain = hash_with()
    assert hash_with() == plain
    assert hash_with(table_sizes={"users": (2_000_000, 2**30)}) == hash_with(
        table_sizes={"users": (2_100_000, 2**30 + 12345)}
    )
    accepted = {("0020", "create-index-blocking"): {"by": "leo", "comment": "ok"}}
    assert hash_with(acceptances=accepted) != plain
    assert hash_with(table_sizes={"users": (200, 98_304)}) != plain  # the grade changed


def test_a_file_that_does_not_parse_hides_none_of_the_others(tmp_path: Path) -> None:
    folder = project(tmp_path, ("0002", INDEX))
    (folder / "versions" / "0003_broken.py").write_text("revision = '0003'\ndef upgrade(:\n")
    tree = alembic.read_scripts(folder)
    reports = analyse(folder, ["0001"])

    assert [p.kind for p in tree.problems] == ["syntax_error"]
    assert [(r.revision, r.previewable, r.grade) for r in reports] == [("0002", True, "high")]


# --- Stored analyses: keyed by what each depends on, never by the SQL ---


class MemoryStore:
    """risk.Store in a dict (as JSON, as a database keeps it)."""

    def __init__(self) -> None:
        self.rows: dict[str, risk.Stored] = {}

    def load(self, keys: list[str]) -> dict[str, dict]:
        return {k: json.loads(json.dumps(self.rows[k].report)) for k in keys if k in self.rows}

    def load_schemas(self, keys: list[str]) -> dict[str, dict]:
        return {k: json.loads(json.dumps(self.rows[k].schema)) for k in keys if k in self.rows}

    def save(self, records: dict[str, risk.Stored]) -> None:
        self.rows.update(records)

    def stored(self) -> set[str]:
        return {stored.revision for stored in self.rows.values()}


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of every revision rendered, in order."""
    seen: list[str] = []
    real = alembic.render_offline

    def counting(tree: alembic.ScriptTree, revisions: list, **kwargs: object) -> object:
        revisions = list(revisions)
        seen.extend(rev.id for rev in revisions)
        return real(tree, revisions, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(alembic, "render_offline", counting)
    return seen


def chain(tmp_path: Path) -> Path:
    """0001 creates users; 0002 adds a column, 0003 indexes it, 0004 changes its type; 0005 is on a
    branch of its own from 0001."""
    folder = project(
        tmp_path,
        ("0002", 'op.add_column("users", sa.Column("code", sa.String(20)))'),
        ("0003", INDEX.replace('"email"', '"code"')),
        ("0004", 'op.alter_column("users", "code", type_=sa.String(40))'),
    )
    write(folder, "0005", "0001", 'op.add_column("users", sa.Column("other", sa.Text))')
    return folder


def test_a_stored_analysis_is_read_back_without_rendering_and_grades_the_same(
    tmp_path: Path, renders: list[str]
) -> None:
    folder = chain(tmp_path)
    store = MemoryStore()

    first = analyse(folder, store=store)
    assert sorted(renders) == ["0001", "0002", "0003", "0004", "0005"]
    assert store.stored() == {"0001", "0002", "0003", "0004", "0005"}
    renders.clear()
    again = analyse(folder, store=store)

    assert renders == []
    assert [r.to_json() for r in again] == [r.to_json() for r in first]
    assert [r.to_json() for r in analyse(folder)] == [r.to_json() for r in first]
    assert risk.report_hash(again) == risk.report_hash(first)


def test_revisions_that_cannot_render_are_stored_and_read_back_too(
    tmp_path: Path, renders: list[str]
) -> None:
    folder = project(
        tmp_path,
        ("0002", 'op.get_bind().execute(sa.text("SELECT count(*) FROM users")).scalar()'),
        ("0003", 'raise TypeError("bad")'),
        ("0004", "print('hello')\n" + INDEX),
    )
    store = MemoryStore()
    first = analyse(folder, store=store)
    renders.clear()

    again = analyse(folder, store=store)

    assert renders == []
    assert [r.to_json() for r in again] == [r.to_json() for r in first]
    assert [(r.revision, r.grade, r.previewable) for r in again] == [
        ("0001", "low", True),
        ("0002", "medium", False),
        ("0003", "high", False),
        ("0004", "high", True),
    ]
    assert again[3].printed.strip() == "hello"


def test_editing_one_revision_analyses_it_and_its_descendants_only(
    tmp_path: Path, renders: list[str]
) -> None:
    folder = chain(tmp_path)
    store = MemoryStore()
    analyse(folder, store=store)
    renders.clear()

    write(
        folder, "0003", "0002", "op.create_index('ix_users_code', 'users', ['code'], unique=True)"
    )
    reports = by_rev(analyse(folder, store=store))

    assert sorted(renders) == ["0003", "0004"]
    assert "UNIQUE" in reports["0003"].sql
    # The facts 0004 builds on still come from its parents, stored or not: varchar(20) widened.
    assert counted(reports["0004"]) == []


def test_what_a_revision_carries_from_its_parents_is_part_of_its_key(
    tmp_path: Path, renders: list[str]
) -> None:
    folder = chain(tmp_path)
    store = MemoryStore()
    analyse(folder, store=store)
    renders.clear()

    # 0002 makes the column text: 0004's change to varchar(40) now rewrites the table.
    write(folder, "0002", "0001", 'op.add_column("users", sa.Column("code", sa.Text))')
    reports = by_rev(analyse(folder, store=store))

    assert sorted(renders) == ["0002", "0003", "0004"]
    assert ("alter-column-type", "high") in counted(reports["0004"])
    assert [r.to_json() for r in reports.values()] == [r.to_json() for r in analyse(folder)]


def test_a_changed_runway_version_analyses_everything_again(
    tmp_path: Path, renders: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashboard.schema import risk_cache

    folder = chain(tmp_path)
    store = MemoryStore()
    analyse(folder, store=store)
    renders.clear()

    monkeypatch.setattr(risk_cache, "runway_version", lambda: "a rule changed")
    analyse(folder, store=store)

    assert sorted(renders) == ["0001", "0002", "0003", "0004", "0005"]


def test_runway_version_hashes_the_rules_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from dashboard.schema import risk_cache

    copy = tmp_path / "dashboard"
    shutil.copytree(ROOT / "dashboard", copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(risk_cache, "_DASHBOARD", copy)
    version = risk_cache.runway_version.__wrapped__

    before = version()
    assert version() == before
    rule = copy / "schema" / "rules" / "tables.py"
    rule.write_text(rule.read_text() + "\n# a rule changed\n")
    assert version() != before
    assert risk_cache.runway_version() == risk_cache.runway_version()  # read once per process


def test_the_server_major_and_the_pending_flag_are_part_of_the_key(
    tmp_path: Path, renders: list[str]
) -> None:
    folder = chain(tmp_path)
    store = MemoryStore()
    analyse(folder, store=store)
    renders.clear()

    analyse(folder, store=store, pending=True)
    assert len(renders) == 5
    analyse(folder, store=store, pg_major=10)
    assert len(renders) == 10
    # A revision alone carries nothing from its parent: another key than within the chain.
    risk.analyse(folder, alembic.read_scripts(folder), ["0004"], store=store)
    assert renders[10:] == ["0004"]


def test_sizes_and_acceptances_apply_on_top_of_a_stored_analysis(
    tmp_path: Path, renders: list[str]
) -> None:
    folder = project(tmp_path, ("0002", INDEX))
    store = MemoryStore()
    analyse(folder, store=store)
    renders.clear()

    small = by_rev(analyse(folder, store=store, table_sizes={"users": (200, 8192)}))["0002"]
    big = by_rev(analyse(folder, store=store, table_sizes={"users": (10**7, 2**31)}))["0002"]
    accepted = by_rev(
        analyse(
            folder,
            store=store,
            acceptances={("0002", "create-index-blocking"): {"by": "lea", "comment": "quiet"}},
        )
    )["0002"]
    plain = by_rev(analyse(folder, store=store))["0002"]

    assert renders == []
    assert (small.grade, big.grade, accepted.grade, plain.grade) == (
        "medium",
        "high",
        "low",
        "high",
    )

    def index(report: risk.RevisionReport) -> risk.Finding:
        return next(f for f in report.findings if f.rule == "create-index-blocking")

    assert "is small" in index(small).message and "is small" not in index(plain).message
    assert index(accepted).accepted == {"by": "lea", "comment": "quiet", "source": "lead"}
    assert index(plain).accepted is None


def test_an_inline_acknowledgement_added_to_a_file_is_a_new_analysis(tmp_path: Path) -> None:
    folder = project(tmp_path, ("0002", INDEX))
    store = MemoryStore()
    assert by_rev(analyse(folder, store=store))["0002"].grade == "high"

    path = folder / "versions" / "0002_step.py"
    path.write_text(
        path.read_text().replace(
            "def upgrade():", "def upgrade():  # runway: accept create-index-blocking -- empty"
        )
    )

    assert by_rev(analyse(folder, store=store))["0002"].grade == "low"


def test_a_revision_that_timed_out_is_not_stored_nor_what_builds_on_it(tmp_path: Path) -> None:
    folder = project(
        tmp_path,
        ("0002", "import time\ntime.sleep(30)"),
        ("0003", 'op.add_column("users", sa.Column("a", sa.Text))'),
    )
    write(folder, "0004", "0001", 'op.add_column("users", sa.Column("b", sa.Text))')
    store = MemoryStore()

    reports = by_rev(analyse(folder, store=store, render_timeout=0.5))

    assert reports["0002"].failure["category"] == "timed_out"
    assert store.stored() == {"0001", "0004"}


def test_a_stored_record_that_does_not_fit_is_analysed_again(
    tmp_path: Path, renders: list[str]
) -> None:
    folder = project(tmp_path, ("0002", INDEX))
    store = MemoryStore()
    first = analyse(folder, store=store)
    for key, stored in list(store.rows.items()):  # a shape from another version
        store.rows[key] = risk.Stored(stored.revision, {"revision": stored.revision}, {})
    renders.clear()

    again = analyse(folder, store=store)

    assert sorted(renders) == ["0001", "0002"]
    assert [r.to_json() for r in again] == [r.to_json() for r in first]


def test_a_parent_whose_schema_facts_cannot_be_read_is_analysed_again_with_its_child(
    tmp_path: Path, renders: list[str]
) -> None:
    folder = chain(tmp_path)
    store = MemoryStore()
    first = by_rev(analyse(folder, store=store))
    for key, stored in list(store.rows.items()):
        if stored.revision == "0002":
            store.rows[key] = risk.Stored("0002", stored.report, {"columns": {"users": 1}})
    renders.clear()

    path = folder / "versions" / "0003_step.py"
    path.write_text(path.read_text() + "\n# edited\n")
    again = by_rev(analyse(folder, store=store))

    assert sorted(renders) == ["0002", "0003", "0004"]
    assert [r.to_json() for r in again.values()] == [r.to_json() for r in first.values()]
    assert renders.count("0001") == 0  # its facts were read from the store


def test_without_squawk_nothing_is_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = project(tmp_path, ("0002", INDEX))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    store = MemoryStore()

    analyse(folder, store=store)

    assert store.stored() == set()


def test_two_render_workers_give_what_one_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renders: list[str]
) -> None:
    folder = chain(tmp_path)
    one = [r.to_json() for r in analyse(folder)]
    calls = len(renders)

    monkeypatch.setattr(risk, "REVISIONS_PER_RENDER_WORKER", 2)
    two = [r.to_json() for r in analyse(folder)]

    assert two == one
    assert calls == 5 and len(renders) == 10  # the second run in two render calls of 3 and 2
