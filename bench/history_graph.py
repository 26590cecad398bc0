"""How long the history page's graph takes: 300 revisions with branches and merges.

    .venv/bin/python bench/history_graph.py [--revisions 300] [--runs 5]

Writes a script folder into a temporary directory, then times (median of --runs):

- Runway: ``read_scripts`` + ``history`` + ``to_json`` (what the history page does);
- Alembic: ``ScriptDirectory`` + ``walk_revisions`` on the same folder (imports every file).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard.lib.alembic import history, read_scripts  # noqa: E402

TEMPLATE = '''"""{message}

Revision ID: {rev}
Revises: {revises}
Create Date: 2025-01-01 00:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = {rev!r}
down_revision: str | Sequence[str] | None = {down!r}
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "t_{rev}",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("id", name="pk_t_{rev}"),
    )
    op.create_index("ix_t_{rev}_name", "t_{rev}", ["name"])


def downgrade() -> None:
    op.drop_index("ix_t_{rev}_name", table_name="t_{rev}")
    op.drop_table("t_{rev}")
'''


def generate(folder: Path, count: int, seed: int = 7) -> dict[str, int]:
    """A main line that keeps forking into 2-3 short branches which are merged again."""
    rng = random.Random(seed)
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text("from alembic import context\n")
    written = 0
    stats = {"merges": 0, "branch_points": 0}

    def write(down: str | tuple[str, ...] | None, message: str) -> str:
        nonlocal written
        written += 1
        rev = f"{rng.getrandbits(48):012x}"
        revises = ", ".join(down) if isinstance(down, tuple) else (down or "")
        name = f"{written:04d}_{rev}_{message.replace(' ', '_')}.py"
        (folder / "versions" / name).write_text(
            TEMPLATE.format(rev=rev, down=down, revises=revises, message=message)
        )
        return rev

    tip = write(None, "initial schema")
    while written < count:
        if rng.random() < 0.25 and written <= count - 14:  # room for 3 branches of 4 + merge
            stats["branch_points"] += 1
            tips = []
            for b in range(rng.choice((2, 3))):
                branch_tip = tip
                for _ in range(rng.randint(1, 4)):
                    branch_tip = write(branch_tip, f"branch {b} step")
                tips.append(branch_tip)
            tip = write(tuple(tips), "merge branches")
            stats["merges"] += 1
        else:
            tip = write(tip, "linear step")
    stats["revisions"] = written
    return stats


def median_ms(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """(first run, median of the runs) in milliseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times[0], statistics.median(times)


def render_page(folder: Path) -> str:
    """The history page's HTML as the view renders it, with nothing cached."""
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django

    django.setup()
    from django.template.loader import render_to_string

    from dashboard.databases.models import ManagedDatabase
    from dashboard.schema.graph import draw
    from dashboard.schema.status import Status

    tree = read_scripts(folder)
    result = history(tree, [tree.order[len(tree.order) // 2]])
    data = result.to_json()
    db = ManagedDatabase(name="bench", environment="production", script_location=str(folder))
    context = {
        "db": db,
        "check": None,
        "latest": None,
        "status": Status(result, known=True),
        "data": data,
        "rows": draw(data["revisions"]),
    }
    html = render_to_string("schema/history.html", context)
    assert html.count("data-rev=") == len(tree.revisions)
    return html


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="runway-bench-") as tmp:
        folder = Path(tmp) / "project"
        stats = generate(folder, args.revisions)
        print(
            f"{stats['revisions']} revisions, {stats['branch_points']} branch points, "
            f"{stats['merges']} merges"
        )

        def runway() -> object:
            tree = read_scripts(folder)
            mid = tree.order[len(tree.order) // 2]
            return history(tree, [mid]).to_json()

        tree = read_scripts(folder)
        assert not tree.problems, tree.problems
        assert len(tree.revisions) == stats["revisions"] and len(tree.heads) == 1
        result = history(tree, [tree.order[len(tree.order) // 2]])
        print(f"graph width {result.width} lanes, {len(result.pending)} pending")

        read_first, read_median = median_ms(lambda: read_scripts(folder), args.runs)
        hist_first, hist_median = median_ms(
            lambda: history(tree, [tree.order[150 % len(tree.order)]]).to_json(), args.runs
        )
        total_first, total_median = median_ms(runway, args.runs)

        from alembic.config import Config
        from alembic.script import ScriptDirectory

        def alembic_walk() -> object:
            cfg = Config()
            cfg.set_main_option("script_location", str(folder))
            script = ScriptDirectory.from_config(cfg)
            return list(script.walk_revisions())

        assert len(alembic_walk()) == stats["revisions"]
        al_first, al_median = median_ms(alembic_walk, args.runs)

        page_first, page_median = median_ms(lambda: render_page(folder), args.runs)

        # The history page also grades the pending revisions: render each one's SQL offline,
        # squawk and Runway's rules. Cached per process until a script changes; this is the
        # uncached cost (the first call also pays Alembic's and pglast's imports).
        from dashboard.schema import risk

        risk_first, risk_median = median_ms(
            lambda: risk.analyse(folder, tree, list(result.pending)), max(3, args.runs // 2)
        )

        print(f"{'':44} {'first':>9} {'median':>9}")
        rows = [
            ("read_scripts", read_first, read_median),
            ("history + to_json", hist_first, hist_median),
            ("read_scripts + history + to_json (page)", total_first, total_median),
            ("alembic ScriptDirectory + walk_revisions", al_first, al_median),
            ("whole history page, template and SVG (cold)", page_first, page_median),
            (
                f"risk analysis of the {len(result.pending)} pending (uncached)",
                risk_first,
                risk_median,
            ),
        ]
        for label, first, median in rows:
            print(f"{label:44} {first:7.1f}ms {median:7.1f}ms")
        print(f"alembic / runway (median): {al_median / total_median:.1f}x")


if __name__ == "__main__":
    main()
