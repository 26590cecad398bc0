"""How long linting a 300-revision chain takes, and the history page of such a database.

    .venv/bin/python bench/lint_chain.py [--revisions 300] [--runs 3] [--page-runs 9] [--no-page]
        [--baseline OTHER_CHECKOUT]

Writes an Alembic project into a temporary folder: a chain of ``--revisions`` revisions in the
seed's patterns (create tables, add columns with and without defaults, indexes with and without
CONCURRENTLY in autocommit blocks, foreign keys, NOT VALID + VALIDATE, SET NOT NULL, type
changes, batched backfills through ``op.get_bind()``, seed INSERTs with parameters, a revision
that reads the database, one that imports the application's code), a few branches merged
again, and one broken link (a ``down_revision`` naming an id no file has). Then, in one run:

- (a) ``manage.py lint_migrations --script-location DIR --format json`` as a real process (what a
  CI job runs), median of ``--runs``, beside ``manage.py lint_migrations --help`` (the process's
  start: Python, Django, the command's imports) and, with ``--baseline``, the same command of
  another checkout (an older commit), run interleaved so both meet the same load;
- (b) squawk alone over the same rendered SQL: one ``squawk`` over one file per revision, the
  floor; beside one squawk process per revision (how Runway called it before);
- (c) the render step alone (``render_offline``, upgrade and downgrade), in one render worker
  and split between two as ``risk.analyse`` does;
- (d) Runway's rules alone on the rendered SQL (``rules.analyse_sql``, the schema carried from
  parent to child);
- (e) ``risk.analyse`` in this process (render + rules + squawk + grading);

and the ratios (a)/(b). Last (unless ``--no-page``), on a private PostgreSQL cluster: the history
page of a registered database at the chain's first revision (everything else pending and
graded) through Django's test client: the first visit (the analysis computed), later visits
(median of ``--page-runs``, with what the analysis and the graph take of them), the first visit
from another process (another web host: nothing in memory), after one revision file is edited,
and the log-in page as a trivial view.

The machine is shared and has two cores: the load average is printed first; compare figures
from one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HEADER = '''"""{message}

Revision ID: {rev}
Revises: {revises}
Create Date: {date}
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
{imports}
revision: str = {rev!r}
down_revision: str | Sequence[str] | None = {down!r}
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''

BACKFILL = """    # Batches of {batch:,} rows, each its own short transaction (an autocommit block).
    context = op.get_context()
    statement = sa.text(
        "UPDATE {table} SET {column} = {source} "
        "WHERE id >= :low AND id < :high AND {column} IS DISTINCT FROM {source}"
    )
    if context.as_sql:
        with context.autocommit_block():
            op.execute("-- repeat for each id range up to max({table}.id)")
            op.execute(statement.bindparams(low=1, high={batch_end}))
        return
    with context.autocommit_block():
        bind = op.get_bind()
        low, high = bind.execute(sa.text("SELECT min(id), max(id) FROM {table}")).one()
        while low is not None and low <= high:
            bind.execute(statement, {{"low": low, "high": low + {batch}}})
            low += {batch}"""


class Chain:
    """The state a generated chain has reached: its tables and their columns."""

    def __init__(self, folder: Path, rng: random.Random) -> None:
        self.folder = folder
        self.rng = rng
        self.written = 0
        self.tables: dict[str, list[str]] = {"users": ["email"], "plans": ["name"]}
        self.counter = 0
        self.patterns: dict[str, int] = {}

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def write(
        self,
        down: str | tuple[str, ...] | None,
        pattern: str,
        upgrade: str,
        downgrade: str,
        imports: str = "",
        message: str = "",
    ) -> str:
        self.written += 1
        self.patterns[pattern] = self.patterns.get(pattern, 0) + 1
        rev = f"{self.rng.getrandbits(48):012x}"
        revises = ", ".join(down) if isinstance(down, tuple) else (down or "")
        message = message or pattern.replace("_", " ")
        day = 1 + self.written % 28
        text = HEADER.format(
            message=message,
            rev=rev,
            revises=revises,
            down=down,
            date=f"2025-{1 + self.written // 28 % 12:02d}-{day:02d} 10:00:00.000000+00:00",
            imports=imports + "\n" if imports else "",
            upgrade=upgrade,
            downgrade=downgrade,
        )
        slug = message.lower().replace(" ", "_")[:40]
        (self.folder / "versions" / f"{rev}_{slug}.py").write_text(text)
        return rev

    def table(self) -> str:
        return self.rng.choice(sorted(self.tables))

    # --- The seed's patterns: (upgrade, downgrade) bodies ---

    def create_table(self) -> tuple[str, str]:
        table = self.name("events")
        self.tables[table] = ["name"]
        up = f"""    op.create_table(
        "{table}",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_{table}"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_{table}_user_id_users"),
    )
    op.create_index("ix_{table}_user_id", "{table}", ["user_id"])"""
        return up, f'    op.drop_table("{table}")'

    def add_column_nullable(self) -> tuple[str, str]:
        table = self.table()
        column = self.name("note")
        self.tables[table].append(column)
        up = f'    op.add_column("{table}", sa.Column("{column}", sa.String(64), nullable=True))'
        return up, f'    op.drop_column("{table}", "{column}")'

    def add_column_default(self) -> tuple[str, str]:
        table = self.table()
        column = self.name("is_enabled")
        up = f"""    op.add_column(
        "{table}",
        sa.Column("{column}", sa.Boolean(), server_default=sa.false(), nullable=False),
    )"""
        return up, f'    op.drop_column("{table}", "{column}")'

    def add_column_volatile(self) -> tuple[str, str]:
        table = self.table()
        column = self.name("token")
        up = f"""    op.add_column(
        "{table}",
        sa.Column(
            "{column}", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False
        ),
    )"""
        return up, f'    op.drop_column("{table}", "{column}")'

    def create_index(self) -> tuple[str, str]:
        table = self.table()
        column = self.rng.choice(self.tables[table])
        index = self.name(f"ix_{table}_{column}")
        up = f'    op.create_index("{index}", "{table}", ["{column}"])'
        return up, f'    op.drop_index("{index}", table_name="{table}")'

    def create_index_concurrently(self) -> tuple[str, str]:
        table = self.table()
        column = self.rng.choice(self.tables[table])
        index = self.name(f"ix_{table}_{column}")
        up = f"""    with op.get_context().autocommit_block():
        op.create_index(
            "{index}", "{table}", ["{column}"], postgresql_concurrently=True, if_not_exists=True
        )"""
        down = f"""    with op.get_context().autocommit_block():
        op.drop_index("{index}", table_name="{table}", postgresql_concurrently=True)"""
        return up, down

    def foreign_key(self) -> tuple[str, str]:
        table = self.table()
        column = self.name("plan_id")
        fk = f"fk_{table}_{column}_plans"
        up = f"""    op.add_column("{table}", sa.Column("{column}", sa.Integer(), nullable=True))
    op.create_foreign_key("{fk}", "{table}", "plans", ["{column}"], ["id"], ondelete="RESTRICT")"""
        down = f"""    op.drop_constraint("{fk}", "{table}", type_="foreignkey")
    op.drop_column("{table}", "{column}")"""
        return up, down

    def foreign_key_not_valid(self) -> tuple[str, str]:
        table = self.table()
        column = self.name("owner_id")
        fk = f"fk_{table}_{column}_users"
        up = f"""    op.add_column("{table}", sa.Column("{column}", sa.Integer(), nullable=True))
    op.create_foreign_key(
        "{fk}", "{table}", "users", ["{column}"], ["id"], postgresql_not_valid=True
    )
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE {table} VALIDATE CONSTRAINT {fk}")"""
        down = f"""    op.drop_constraint("{fk}", "{table}", type_="foreignkey")
    op.drop_column("{table}", "{column}")"""
        return up, down

    def set_not_null(self) -> tuple[str, str]:
        table = self.table()
        column = self.rng.choice(self.tables[table])
        up = (
            f'    op.alter_column("{table}", "{column}", existing_type=sa.String(), nullable=False)'
        )
        down = (
            f'    op.alter_column("{table}", "{column}", existing_type=sa.String(), nullable=True)'
        )
        return up, down

    def set_not_null_safely(self) -> tuple[str, str]:
        table = self.table()
        column = self.rng.choice(self.tables[table])
        check = f"ck_{table}_{column}_not_null"
        up = f"""    op.execute(
        "ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({column} IS NOT NULL) NOT VALID"
    )
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE {table} VALIDATE CONSTRAINT {check}")
    op.alter_column("{table}", "{column}", existing_type=sa.String(), nullable=False)
    op.drop_constraint("{check}", "{table}", type_="check")"""
        down = (
            f'    op.alter_column("{table}", "{column}", existing_type=sa.String(), nullable=True)'
        )
        return up, down

    def change_type(self) -> tuple[str, str]:
        table = self.table()
        column = self.rng.choice(self.tables[table])
        widen = self.rng.random() < 0.5
        new = "sa.String(length=255)" if widen else "sa.Text()"
        up = f"""    op.alter_column(
        "{table}", "{column}", existing_type=sa.String(length=100), type_={new}
    )"""
        down = f"""    op.alter_column(
        "{table}", "{column}", existing_type={new}, type_=sa.String(length=100)
    )"""
        return up, down

    def int_to_bigint(self) -> tuple[str, str]:
        table = self.table()
        up = f'    op.alter_column("{table}", "id", existing_type=sa.Integer, type_=sa.BigInteger)'
        down = f'    op.alter_column("{table}", "id", type_=sa.Integer)'
        return up, down

    def backfill(self) -> tuple[str, str]:
        table = self.table()
        column = self.name("email_new")
        source = self.rng.choice(self.tables[table])
        self.tables[table].append(column)
        up = f'    op.add_column("{table}", sa.Column("{column}", sa.String(length=500)))\n'
        up += BACKFILL.format(
            table=table, column=column, source=source, batch=10_000, batch_end=10_001
        )
        return up, f'    op.drop_column("{table}", "{column}")'

    def seed_insert(self) -> tuple[str, str]:
        name = self.name("plan")
        up = f"""    plans = sa.table(
        "plans", sa.column("name", sa.String), sa.column("price", sa.Integer)
    )
    op.bulk_insert(plans, [{{"name": "{name}_basic", "price": 0}}])
    op.get_bind().execute(
        sa.text("INSERT INTO plans (name, price) VALUES (:name, :price)"),
        [{{"name": "{name}_pro", "price": 1999}}, {{"name": "{name}_team", "price": 4999}}],
    )
    op.execute("UPDATE plans SET name = lower(name) WHERE name LIKE '{name}%'")"""
        down = f"""    op.execute("DELETE FROM plans WHERE name LIKE '{name}%'")"""
        return up, down

    def whole_table_update(self) -> tuple[str, str]:
        table = self.table()
        column = self.rng.choice(self.tables[table])
        up = f"""    op.execute("UPDATE {table} SET {column} = trim({column})")"""
        return up, "    pass"

    def drop_column(self) -> tuple[str, str]:
        table = self.table()
        column = self.name("legacy")
        up = f"""    op.add_column("{table}", sa.Column("{column}", sa.Integer(), nullable=True))
    op.drop_column("{table}", "{column}")"""
        return up, "    pass"

    def reads_database(self) -> tuple[str, str]:
        up = """    bind = op.get_bind()
    count = bind.execute(sa.text("SELECT count(*) FROM plans WHERE price = 0")).scalar()
    if count:
        op.execute("UPDATE plans SET price = 100 WHERE price = 0")"""
        return up, "    pass"

    def imports_application(self) -> tuple[str, str]:
        up = """    for plan in DEFAULT_PLANS:
        op.execute(sa.text("INSERT INTO plans (name) VALUES (:n)").bindparams(n=plan))"""
        return up, "    pass"


PATTERNS = [
    ("create_table", 6),
    ("add_column_nullable", 8),
    ("add_column_default", 5),
    ("add_column_volatile", 2),
    ("create_index", 4),
    ("create_index_concurrently", 5),
    ("foreign_key", 3),
    ("foreign_key_not_valid", 3),
    ("set_not_null", 2),
    ("set_not_null_safely", 2),
    ("change_type", 3),
    ("int_to_bigint", 1),
    ("backfill", 3),
    ("seed_insert", 3),
    ("whole_table_update", 2),
    ("drop_column", 1),
]

# What a pattern's revision imports beyond alembic and sqlalchemy.
IMPORTS = {"imports_application": "from app.models import DEFAULT_PLANS  # the application's"}


def generate(folder: Path, count: int, seed: int = 11) -> dict[str, Any]:
    """An Alembic project in ``folder``: ``count`` revisions, merges, one broken link."""
    rng = random.Random(seed)
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(
        "from alembic import context\n\nfrom app.models import metadata  # the application's\n\n"
        "target_metadata = metadata\n"
    )
    app = folder.parent / "app"  # the application's own package, beside the scripts
    app.mkdir(exist_ok=True)
    (app / "__init__.py").write_text("")
    (app / "models.py").write_text("DEFAULT_PLANS = ['free', 'pro']\nmetadata = None\n")
    chain = Chain(folder, rng)
    names = [n for n, _ in PATTERNS]
    weights = [w for _, w in PATTERNS]
    stats = {"merges": 0, "broken": ""}

    def step(down: str | tuple[str, ...] | None, pattern: str | None = None) -> str:
        pattern = pattern or rng.choices(names, weights)[0]
        up, dn = getattr(chain, pattern)()
        return chain.write(down, pattern, up, dn, imports=IMPORTS.get(pattern, ""))

    base = chain.write(
        None,
        "initial_schema",
        """    op.create_table(
        "plans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("price", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_plans"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=100), nullable=True),
        sa.Column("plan_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"], name="fk_users_plan_id_plans"),
    )""",
        '    op.drop_table("users")\n    op.drop_table("plans")',
    )
    tip = base
    specials = {
        count // 3: "reads_database",
        count // 2: "imports_application",
    }
    broken_at = count - count // 10
    while chain.written < count:
        at = chain.written + 1
        if at in specials:
            tip = step(tip, specials[at])
        elif at == broken_at:
            # A down_revision naming an id no file has: the rest of the chain still counts.
            up, dn = chain.add_column_nullable()
            tip = chain.write("0badc0ffee00", "add_column_nullable", up, dn, message="orphan")
            stats["broken"] = tip
        elif at % 60 == 30 and at + 8 < count:
            tips = []
            for _ in range(2):
                branch = tip
                for _ in range(rng.randint(2, 3)):
                    branch = step(branch)
                tips.append(branch)
            tip = chain.write(tuple(tips), "merge", "    pass", "    pass", message="merge heads")
            stats["merges"] += 1
        else:
            tip = step(tip)
    stats["revisions"] = chain.written
    stats["base"] = base
    stats["patterns"] = chain.patterns
    return stats


# --- Measuring ---


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def median_of(fn: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    """(first, median) seconds of ``runs`` calls, and the last value."""
    times, value = [], None
    for _ in range(runs):
        seconds, value = timed(fn)
        times.append(seconds)
    return times[0], statistics.median(times), value


def lint_process(folder: Path, env: dict[str, str], tree: Path = ROOT) -> list[dict[str, Any]]:
    """``manage.py lint_migrations`` of ``tree`` (this checkout, or a baseline's) on ``folder``."""
    done = subprocess.run(
        [sys.executable, "manage.py", "lint_migrations", "--script-location", str(folder),
         "--format", "json"],
        cwd=tree, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode not in (0, 1):
        raise RuntimeError(f"lint_migrations exited {done.returncode}: {done.stderr[-2000:]}")
    return list(json.loads(done.stdout))


def squawk_files(files: list[Path]) -> list[dict[str, Any]]:
    from dashboard.lib import squawk

    done = subprocess.run(
        [squawk.binary(), "--reporter", "json", "-c", "/dev/null", *map(str, files)],
        capture_output=True, text=True,
    )  # fmt: skip
    return list(json.loads(done.stdout))


def bench_lint(args: argparse.Namespace, folder: Path, env: dict[str, str]) -> dict[str, float]:
    from dashboard.lib import alembic, squawk
    from dashboard.schema import risk, rules

    tree = alembic.read_scripts(folder)
    revisions = risk.revisions_between(tree, None, None)
    wanted = [tree.revisions[r] for r in revisions]
    print(f"{len(revisions)} revisions to lint; problems in the scripts: "
          f"{'; '.join(p.message for p in tree.problems) or 'none'}")  # fmt: skip

    startup = [timed(lambda: subprocess.run(
        [sys.executable, "manage.py", "lint_migrations", "--help"], cwd=ROOT, env=env,
        capture_output=True, check=True))[0] for _ in range(args.runs)]  # fmt: skip
    base_times: list[float] = []
    ours: list[float] = []
    reports: list[dict[str, Any]] = []
    for _ in range(args.runs):  # interleaved with the baseline, so both meet the same load
        if args.baseline:
            seconds, base_reports = timed(lambda: lint_process(folder, env, args.baseline))
            base_times.append(seconds)
        seconds, reports = timed(lambda: lint_process(folder, env))
        ours.append(seconds)
    a_first, a_median = ours[0], statistics.median(ours)
    if args.baseline and base_reports != reports:
        print("NOTE: the baseline's reports differ from this tree's")
    grades = {g: sum(1 for r in reports if r["grade"] == g) for g in ("low", "medium", "high")}
    unpreviewable = [r for r in reports if not r["previewable"]]
    print(
        f"lint_migrations: {len(reports)} reports, {grades['high']} high, {grades['medium']} "
        f"medium, {grades['low']} low; not previewable: "
        + ", ".join(f"{r['revision']} ({r['failure']['category']})" for r in unpreviewable)
    )

    c_first, c_median, (rendered, _) = median_of(
        lambda: alembic.render_offline(tree, wanted, downgrade=True), args.runs
    )
    sql = {rid: rendered[rid].upgrade.sql for rid in revisions if rendered[rid].upgrade.ok}
    split_first, split_median, _ = median_of(
        lambda: risk._render(tree, wanted, alembic.render.DEFAULT_TIMEOUT, False), args.runs
    )

    with tempfile.TemporaryDirectory(prefix="runway-bench-sql-") as tmp:
        files = []
        for rid, text in sql.items():
            path = Path(tmp) / f"{rid}.sql"
            path.write_text(text)
            files.append(path)
        b_first, b_median, hits = median_of(lambda: squawk_files(files), args.runs)
    per_first, per_median, _ = median_of(
        lambda: [squawk.lint(text) for text in sql.values()], max(1, args.runs - 2)
    )

    def rules_alone() -> int:
        schemas: dict[str, rules.Schema] = {}
        count = 0
        for rev in wanted:
            before = rules.Schema.merged(schemas[p] for p in rev.parents if p in schemas)
            before.new_tables.clear()
            if rev.id not in sql:
                schemas[rev.id] = before
                continue
            analysis = rules.analyse_sql(sql[rev.id], revision=rev.id, schema=before)
            schemas[rev.id] = analysis.schema
            count += len(analysis.statements)
        return count

    d_first, d_median, statements = median_of(rules_alone, args.runs)
    e_first, e_median, _ = median_of(lambda: risk.analyse(folder, tree, revisions), args.runs)

    n = len(revisions)
    print()
    print(f"{n} revisions, {len(sql)} rendered, {statements} statements, "
          f"{len(hits)} squawk hits; median of {args.runs} runs")  # fmt: skip
    print(f"{'':58} {'first':>8} {'median':>8}")
    rows = [
        ("(a) manage.py lint_migrations --format json (process)", a_first, a_median),
        ("    of it: the process's start (lint_migrations --help)", startup[0],
         statistics.median(startup)),
        ("(b) squawk alone: one process over one file per revision", b_first, b_median),
        ("    squawk, one process per revision", per_first, per_median),
        ("(c) render alone (upgrade + downgrade, one worker)", c_first, c_median),
        ("    the same as risk.analyse renders (two workers)", split_first, split_median),
        ("(d) Runway's rules alone (pglast, in process)", d_first, d_median),
        ("(e) risk.analyse in process (c + d + squawk + grading)", e_first, e_median),
    ]  # fmt: skip
    if base_times:
        rows.insert(1, (f"    the same, from {args.baseline} (interleaved)", base_times[0],
                        statistics.median(base_times)))  # fmt: skip
    for label, first, median in rows:
        print(f"{label:58} {first:7.2f}s {median:7.2f}s")
    if base_times:
        print(f"baseline (a) / this tree's (a): {statistics.median(base_times) / a_median:.1f}x")
    print(f"(a)/(b): {a_median / b_median:.1f}x   (e)/(b): {e_median / b_median:.1f}x   "
          f"per-revision squawk / one squawk: {per_median / b_median:.1f}x")  # fmt: skip
    verdict = "within" if a_median <= 4 * n / 300 else "OVER"
    print(f"target: (a) at most {4 * n / 300:.1f} s for {n} revisions: {verdict} "
          f"({a_median:.2f} s)")  # fmt: skip
    return {"a": a_median, "b": b_median}


# --- The history page ---


def page_child(name: str) -> None:
    """Another web process: its first visit of the history page, nothing of the analysis or the
    scripts in its memory (after a trivial page, so its imports and URL conf are loaded)."""
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(User.objects.get(username="bench-viewer"))
    client.get(reverse("login"))  # the process's own start: imports, the URL conf
    seconds, response = timed(lambda: client.get(reverse("schema-history", args=[name])))
    assert response.status_code == 200, response.status_code
    print(json.dumps({"seconds": seconds}))


def analysed_share(db: Any, runs: int) -> list[tuple[str, float]]:
    """What the analysed page spends on the analysis, and on the rest of what it shows
    (medians, each part alone, as the view calls it; nothing remembered between runs)."""
    from dashboard.schema import analysis
    from dashboard.schema.graph import draw
    from dashboard.schema.status import last_good_check, status_of

    check = last_good_check(db)
    status = status_of(db, check)
    assert status.history is not None
    history = status.history

    def reports() -> Any:
        analysis.STORE.forget()  # as each request starts
        return analysis.reports_for(db, list(history.pending), check=check, tree=history.tree)

    rows = history.to_json()["revisions"]
    parts = [
        ("the stored analysis, read and graded", reports),
        ("the scripts' status (status_of)", lambda: status_of(db, check)),
        ("the graph's rows (history.to_json)", history.to_json),
        ("the graph's SVG (draw)", lambda: draw(rows)),
    ]
    return [(label, median_of(fn, runs)[1] * 1000) for label, fn in parts]


def bench_page(args: argparse.Namespace, folder: Path, base: str, work: Path) -> None:
    from devstack.cluster import start_cluster

    cluster = start_cluster(work / "pg")
    try:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DATABASE_URL": cluster.url("runway"),
            "RUNWAY_ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
            "RUNWAY_LOG_LEVEL": "WARNING",
            "RUNWAY_SECRET_KEY": os.environ.get("RUNWAY_SECRET_KEY") or secrets.token_urlsafe(50),
        }
        os.environ.update(env)
        import django

        django.setup()
        from django.contrib.auth.models import User
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client
        from django.urls import reverse
        from django.utils import timezone

        from dashboard.accounts.roles import Role, grant
        from dashboard.databases.models import ConnectionCheck, ManagedDatabase

        cluster.create_database("runway")
        call_command("migrate", verbosity=0)
        grant(User.objects.create_user("bench-viewer", password="bench-password"), Role.VIEWER)
        db = ManagedDatabase(
            name="bench-chain",
            environment="production",
            dsn="host=127.0.0.1 port=1 dbname=bench user=app",
            password_ref="env:RUNWAY_DB_BENCH",
            script_location=str(folder),
        )
        db.bind_secret(None)
        db.save(force_insert=True)
        ConnectionCheck.objects.create(
            database=db, state="succeeded", current_revisions=[base], finished_at=timezone.now(),
            server_version="15.18",
        )  # fmt: skip
        client = Client()
        client.force_login(User.objects.get(username="bench-viewer"))
        url = reverse("schema-history", args=[db.name])

        def visit() -> Any:
            response = client.get(url)
            assert response.status_code == 200, response.status_code
            return response

        cold, body = timed(visit)
        graded = body.content.decode().count("data-grade=")
        warm_first, warm, _ = median_of(visit, args.page_runs)
        share = analysed_share(db, args.page_runs)
        queries: list[str] = []
        with connection.execute_wrapper(
            lambda run, sql, *rest: queries.append(sql) or run(sql, *rest)
        ):
            visit()
        other = subprocess.run(
            [sys.executable, __file__, "--page-child", db.name], cwd=ROOT, env=env,
            capture_output=True, text=True,
        )  # fmt: skip
        if other.returncode != 0:
            raise RuntimeError(other.stderr[-3000:])
        other_s = json.loads(other.stdout.strip().splitlines()[-1])["seconds"]

        # One revision file edited (the tenth from the end): it and its descendants again.
        files = sorted((folder / "versions").glob("*.py"), key=lambda p: p.stat().st_mtime)
        edited = files[-10]
        edited.write_text(edited.read_text() + "\n# edited\n")
        after_edit, _ = timed(visit)
        trivial_first, trivial, _ = median_of(lambda: client.get(reverse("login")), args.page_runs)
    finally:
        cluster.stop()

    print()
    print(f"history page of a {args.revisions}-revision database, {graded} pending graded; "
          f"median of {args.page_runs}")  # fmt: skip
    print(f"  first visit (analysis computed)              {cold * 1000:9.0f} ms")
    print(f"  later visits (analysed), median              {warm * 1000:9.1f} ms "
          f"({len(queries)} queries)")  # fmt: skip
    for label, ms in share:
        print(f"    of it: {label:37} {ms:9.1f} ms")
    print(f"  first visit from another process (warmed up)  {other_s * 1000:9.1f} ms")
    print(f"  after one revision file is edited            {after_edit * 1000:9.0f} ms")
    print(f"  trivial view (log-in page), median           {trivial * 1000:9.1f} ms")
    print(f"  analysed page / trivial view: {warm / trivial:.0f}x; target: within 300 ms: "
          f"{'within' if warm <= 0.3 else 'OVER'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--revisions", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--page-runs", type=int, default=9)
    parser.add_argument("--no-page", action="store_true", help="skip the history page")
    parser.add_argument("--keep", action="store_true", help="keep the generated project")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of Runway (e.g. git worktree of an older commit): its "
        "lint_migrations is timed too, interleaved with this one's",
    )
    parser.add_argument("--page-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.page_child:
        page_child(args.page_child)
        return

    work = Path(tempfile.mkdtemp(prefix="runway-bench-chain-"))
    work.chmod(0o755)
    try:
        folder = work / "migrations"
        stats = generate(folder, args.revisions)
        print(f"{stats['revisions']} revisions in {folder}: {stats['merges']} merges, a broken "
              f"link at {stats['broken']}; load average {os.getloadavg()[0]:.2f} on "
              f"{os.cpu_count()} cores; bytecode written: "
              f"{'no' if os.environ.get('PYTHONDONTWRITEBYTECODE') else 'yes'}")  # fmt: skip
        print("patterns: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["patterns"].items())))
        env = {**os.environ, "RUNWAY_LOG_LEVEL": "WARNING"}
        bench_lint(args, folder, env)
        if not args.no_page:
            bench_page(args, folder, stats["base"], work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
