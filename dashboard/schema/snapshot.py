"""Data-loss detection: a snapshot of each critical table before a run's execution, compared
with the same tables after it.

A table's snapshot holds its exact row count and, for a table with a single-column integer key,
the range of keys that existed, so that the comparison after the run looks only at the rows that
were there before: the application's inserts meanwhile (keys above the range) neither look like
loss nor hide it. A table whose keys have no gap (rows == highest - lowest + 1, the usual serial
table) needs nothing more: every key of the range existed, and each one gone is named. A table
with gaps keeps, per key segment (``SEGMENTS``), its rows and the sum of its keys: a segment
with fewer rows lost them (one missing row is named exactly: the difference of the sums).
Then, per table, one of three modes:

- ``count``: the rows alone.
- ``sampled`` (the default): also the hash of every value of a sample of rows (key ranges spread
  over the table, about ``SAMPLE_ROWS`` rows): a value blanked or rewritten in the sample shows,
  with its keys. A change to a few rows outside the sample does not.
- ``full``: also, per key segment (``SEGMENTS`` of them), the sum of each column's value hashes:
  any change to any value of any row that existed shows, with the key range it is in.

Hashes are of each value's text form, so a type change that keeps the text (varchar to text,
int to bigint) is no change. Columns the application itself writes during a run (a
``table.column`` list on the database) are left out of the content comparison: the
application updating them is not loss. Columns added by the run are not compared.

What a revision means to lose is declared in the revision file, one comment line each::

    # runway: expect delete users            (rows of users may be deleted)
    # runway: expect drop-column users.bio   (the column may go, its values with it)
    # runway: expect rewrite users.email     (the values of users.email may change)
    # runway: expect drop-table sessions     (the table may go)

A finding that matches a declaration is kept in the evidence, marked declared, and does not count
as loss; every other finding is loss.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dashboard.lib import pg

MODES = ("sampled", "full", "count")
DEFAULT_MODE = "sampled"
SAMPLE_RANGES = 20  # key ranges in a sample
SAMPLE_ROWS = 2000  # rows in a sample, about
SEGMENTS = 1024  # key segments: of a full snapshot, or of a table whose keys have gaps
KEYS_SHOWN = 10  # keys named per finding

EXPECT = re.compile(
    r"^\s*#\s*runway:\s*expect\s+(delete|drop-column|rewrite|drop-table)\s+(\S+)\s*$",
    re.M | re.I,
)


@dataclass(frozen=True)
class Expectation:
    kind: str  # delete, drop-column, rewrite, drop-table
    name: str  # a table, or table.column
    revision: str = ""

    def covers(self, finding: Finding) -> bool:
        if self.kind == "delete":
            return finding.kind == "rows deleted" and finding.table == self.name
        if self.kind == "drop-table":
            return finding.kind == "table dropped" and finding.table == self.name
        if self.kind == "drop-column":
            return finding.kind == "column dropped" and self.name == finding.qualified
        return finding.kind == "values changed" and self.name == finding.qualified


def expectations_in(source: str, revision: str = "") -> list[Expectation]:
    """The ``# runway: expect ...`` declarations of one revision file's text."""
    return [Expectation(m[1].lower(), m[2], revision) for m in EXPECT.finditer(source)]


def expectations_of(files: Iterable[tuple[str, Path]]) -> list[Expectation]:
    """The declarations of each (revision, file); an unreadable file declares nothing."""
    found: list[Expectation] = []
    for revision, path in files:
        try:
            found += expectations_in(path.read_text(errors="replace"), revision)
        except OSError:
            continue
    return found


@dataclass
class TableSnapshot:
    table: str
    mode: str
    rows: int
    exists: bool = True
    key: str | None = None
    low: int = 0
    high: int = 0
    islands: list[tuple[int, int]] | None = None  # the key ranges that had no gap
    columns: list[str] = field(default_factory=list)
    # segment -> (rows, sum of keys, per column the sum of value hashes (full mode))
    segments: dict[int, tuple[int, int, list[int | None]]] = field(default_factory=dict)
    sample_ranges: list[tuple[int, int]] = field(default_factory=list)
    sample: dict[int, list[int | None]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["segments"] = {str(k): [v[0], v[1], v[2]] for k, v in self.segments.items()}
        data["sample"] = {str(k): v for k, v in self.sample.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TableSnapshot:
        islands = data.get("islands")
        return cls(
            table=data["table"],
            mode=data["mode"],
            rows=int(data["rows"]),
            exists=bool(data.get("exists", True)),
            key=data.get("key"),
            low=int(data.get("low", 0)),
            high=int(data.get("high", 0)),
            islands=None if islands is None else [(int(a), int(b)) for a, b in islands],
            columns=list(data.get("columns", [])),
            segments={
                int(k): (int(v[0]), int(v[1]), list(v[2])) for k, v in data["segments"].items()
            },
            sample_ranges=[(int(a), int(b)) for a, b in data.get("sample_ranges", [])],
            sample={int(k): list(v) for k, v in data["sample"].items()},
            seconds=float(data.get("seconds", 0.0)),
        )


def _sample_ranges(low: int, high: int, rows: int) -> list[tuple[int, int]]:
    """About SAMPLE_ROWS keys in SAMPLE_RANGES ranges spread evenly over [low, high]."""
    if rows == 0:
        return []
    span = high - low + 1
    if rows <= SAMPLE_ROWS:
        return [(low, high)]
    density = rows / span
    width = max(1, int(SAMPLE_ROWS / SAMPLE_RANGES / density))
    step = span / SAMPLE_RANGES
    ranges = []
    for i in range(SAMPLE_RANGES):
        start = low + int(i * step)
        ranges.append((start, min(high, start + width - 1)))
    return ranges


def take_table(conn: pg.Connection, table: str, mode: str) -> TableSnapshot:
    started = time.perf_counter()
    shape = pg.table_shape(conn, table)
    if shape is None:
        return TableSnapshot(table=table, mode=mode, rows=0, exists=False)
    snap = TableSnapshot(table=table, mode=mode, rows=0, columns=list(shape.columns))
    if shape.key is None:
        snap.rows = pg.count_rows(conn, table)
    else:
        snap.key = shape.key
        snap.rows, snap.low, snap.high = pg.key_range(conn, table, shape.key)
        if snap.rows:
            dense = snap.rows == snap.high - snap.low + 1
            snap.islands = [(snap.low, snap.high)] if dense else None
            if not dense or mode == "full":
                columns = snap.columns if mode == "full" else []
                snap.segments = pg.segment_sums(
                    conn, table, shape.key, columns, snap.low, snap.high, SEGMENTS
                )
            if mode in ("sampled", "full"):
                snap.sample_ranges = _sample_ranges(snap.low, snap.high, snap.rows)
                snap.sample = pg.sampled_rows(
                    conn, table, shape.key, snap.columns, snap.sample_ranges
                )
    snap.seconds = round(time.perf_counter() - started, 4)
    return snap


def take(
    conn: pg.Connection, tables: list[str], modes: dict[str, str] | None = None
) -> list[TableSnapshot]:
    """Snapshot ``tables`` in one REPEATABLE READ transaction (one consistent view of all)."""
    modes = modes or {}
    with pg.read_only_snapshot(conn):
        return [take_table(conn, t, modes.get(t, DEFAULT_MODE)) for t in tables]


@dataclass
class Finding:
    table: str
    kind: str  # rows deleted, rows fewer, column dropped, values changed, table dropped
    rows: int  # rows affected (for a sample: of the sampled rows)
    column: str = ""
    keys: list[int] = field(default_factory=list)
    key_ranges: list[tuple[int, int]] = field(default_factory=list)
    detail: str = ""
    declared_by: str = ""  # the revision that declared it

    @property
    def qualified(self) -> str:
        return f"{self.table}.{self.column}" if self.column else self.table

    @property
    def declared(self) -> bool:
        return bool(self.declared_by)

    def sentence(self) -> str:
        what = {
            "rows deleted": f"{self.rows:,} row(s) that existed are gone",
            "rows fewer": f"{self.rows:,} row(s) fewer",
            "column dropped": "the column is gone with its values",
            "values changed": f"values changed in {self.rows:,} row(s)",
            "table dropped": f"the table is gone with its {self.rows:,} row(s)",
        }[self.kind]
        where = f"{self.qualified}: {what}"
        if self.detail:
            where += f" ({self.detail})"
        if self.keys:
            where += f"; keys {', '.join(map(str, self.keys))}"
        elif self.key_ranges:
            shown = ", ".join(f"{a}-{b}" for a, b in self.key_ranges[:KEYS_SHOWN])
            where += f"; in keys {shown}"
        if self.declared:
            where += f"; declared by {self.declared_by or 'a revision'}"
        return where

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["declared"] = self.declared
        data["sentence"] = self.sentence()
        return data


@dataclass
class Comparison:
    findings: list[Finding]
    seconds: float
    tables: list[str]

    @property
    def losses(self) -> list[Finding]:
        return [f for f in self.findings if not f.declared]

    @property
    def lossless(self) -> bool:
        return not self.losses

    def summary(self) -> str:
        if self.lossless:
            declared = len(self.findings)
            extra = f"; {declared} declared change(s)" if declared else ""
            return f"No data lost in {len(self.tables)} table(s){extra}"
        return "Data loss: " + "; ".join(f.sentence() for f in self.losses[:5])

    def to_json(self) -> dict[str, Any]:
        return {
            "lossless": self.lossless,
            "seconds": self.seconds,
            "tables": self.tables,
            "findings": [f.to_json() for f in self.findings],
        }


def _compare_table(
    conn: pg.Connection, before: TableSnapshot, app_writes: set[str]
) -> list[Finding]:
    """What of one table's snapshot is gone or changed now."""
    t = before.table
    if not before.exists:
        return []  # a table the run may create
    shape = pg.table_shape(conn, t)
    if shape is None:
        return [Finding(t, "table dropped", before.rows)]
    findings: list[Finding] = []
    for column in before.columns:
        if column not in shape.columns:
            findings.append(Finding(t, "column dropped", before.rows, column=column))

    key = before.key if before.key in shape.columns else None
    if key is None:
        rows = pg.count_rows(conn, t)
        if rows < before.rows:
            detail = "no integer key: counted only, so inserts meanwhile can hide deletions"
            findings.append(Finding(t, "rows fewer", before.rows - rows, detail=detail))
        return findings

    compared = [
        c
        for c in before.columns
        if c in shape.columns and c != key and f"{t}.{c}" not in app_writes
    ]
    if before.islands is not None:
        expected = sum(b - a + 1 for a, b in before.islands)
        present = pg.rows_in_islands(conn, t, key, before.islands) if expected else 0
        if present < expected:
            keys = pg.missing_keys(conn, t, key, before.islands, KEYS_SHOWN)
            findings.append(Finding(t, "rows deleted", expected - present, keys=keys))
    else:
        counts = pg.segment_sums(conn, t, key, [], before.low, before.high, SEGMENTS)
        lost, ranges, keys = 0, [], []
        for segment, (rows, keysum, _) in sorted(before.segments.items()):
            now, now_sum, _ = counts.get(segment, (0, 0, []))
            if now < rows:
                lost += rows - now
                ranges.append(_segment_range(before, segment))
                if rows - now == 1:  # exactly one gone: its key is what the sum lost
                    keys.append(keysum - now_sum)
        if lost:
            shown = sorted(keys)[:KEYS_SHOWN]
            findings.append(Finding(t, "rows deleted", lost, keys=shown, key_ranges=ranges))

    if before.sample:
        now_sample = pg.sampled_rows(conn, t, key, compared, before.sample_ranges)
        gone = [k for k in before.sample if k not in now_sample]
        if gone and not any(f.kind == "rows deleted" for f in findings):
            findings.append(Finding(t, "rows deleted", len(gone), keys=sorted(gone)[:KEYS_SHOWN]))
        changed: dict[str, list[int]] = {}
        for k, old in sorted(before.sample.items()):
            new = now_sample.get(k)
            if new is None:
                continue
            for position, column in enumerate(compared):
                if old[before.columns.index(column)] != new[position]:
                    changed.setdefault(column, []).append(k)
        for column, keys in changed.items():
            detail = f"{len(keys):,} of {len(before.sample):,} sampled rows"
            findings.append(
                Finding(
                    t,
                    "values changed",
                    len(keys),
                    column=column,
                    keys=keys[:KEYS_SHOWN],
                    detail=detail,
                )
            )
    if before.mode == "full" and before.segments:
        findings += _full_changes(conn, before, key, compared, findings)
    return findings


def _segment_range(snap: TableSnapshot, segment: int) -> tuple[int, int]:
    """The keys of ``segment`` (1-based) as ``width_bucket(key, low, high + 1, SEGMENTS)`` cuts
    them: those with ``(segment - 1) * span <= (key - low) * SEGMENTS < segment * span``."""
    span = snap.high + 1 - snap.low
    first = snap.low - (-(segment - 1) * span // SEGMENTS)  # ceil division
    last = snap.low - (-segment * span // SEGMENTS) - 1
    return first, min(snap.high, last)


def _full_changes(
    conn: pg.Connection, before: TableSnapshot, key: str, compared: list[str], found: list[Finding]
) -> list[Finding]:
    """Per column, the segments whose sum of value hashes moved (among segments that lost no
    row: a deleted row moves every sum and is reported already)."""
    now = pg.segment_sums(conn, before.table, key, compared, before.low, before.high, SEGMENTS)
    by_column: dict[str, list[tuple[int, int]]] = {}
    for segment, (rows, _, sums) in sorted(before.segments.items()):
        current = now.get(segment)
        if current is None or current[0] != rows:
            continue
        for position, column in enumerate(compared):
            if sums[before.columns.index(column)] != current[2][position]:
                by_column.setdefault(column, []).append(_segment_range(before, segment))
    findings = []
    sampled = {f.column for f in found if f.kind == "values changed"}
    for column, ranges in by_column.items():
        if column in sampled:  # the sample names keys already; add where else it changed
            for f in found:
                if f.kind == "values changed" and f.column == column:
                    f.key_ranges = ranges
            continue
        rows = sum(b - a + 1 for a, b in ranges)
        detail = f"in {len(ranges)} of {len(before.segments)} key segments, up to {rows:,} rows"
        findings.append(
            Finding(
                before.table,
                "values changed",
                rows,
                column=column,
                key_ranges=ranges,
                detail=detail,
            )
        )
    return findings


def compare(
    conn: pg.Connection,
    before: list[TableSnapshot],
    expectations: list[Expectation] | None = None,
    app_writes: Iterable[str] = (),
) -> Comparison:
    """What of ``before`` is gone or changed now, in one REPEATABLE READ transaction; each
    finding a declaration covers is marked with its revision."""
    started = time.perf_counter()
    writes = set(app_writes)
    findings: list[Finding] = []
    with pg.read_only_snapshot(conn):
        for snap in before:
            findings += _compare_table(conn, snap, writes)
    for finding in findings:
        for expectation in expectations or []:
            if expectation.covers(finding):
                finding.declared_by = expectation.revision or "a revision"
                break
    return Comparison(findings, round(time.perf_counter() - started, 3), [s.table for s in before])
