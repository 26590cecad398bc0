"""Splitting Alembic's offline SQL into statements with pglast."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql, parser

from dashboard.schema.rules.facts import (
    BOOKKEEPING_TABLE,
)

# --- Splitting ---


@dataclass
class _Piece:
    text: str
    start: int  # character offset in the SQL
    node: Any  # the parsed statement, or None
    error: str = ""


def _split(sql: str) -> list[_Piece]:
    """The statements of ``sql``. Parsed whole when it parses; otherwise split at top-level
    semicolons and parsed one by one, so one bad statement does not hide the others."""
    try:
        raws = parse_sql(sql)
    except parser.ParseError:
        return _split_tolerant(sql)
    pieces = []
    for raw in raws:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(sql)
        text = sql[start:end].strip().rstrip(";").strip()
        pieces.append(_Piece(text, start + _lead(sql[start:end]), raw.stmt))
    return pieces


def _split_tolerant(sql: str) -> list[_Piece]:
    pieces: list[_Piece] = []
    begin: int | None = None
    for token in [*parser.scan(sql), None]:
        if token is not None and token.name in ("SQL_COMMENT", "C_COMMENT"):
            continue
        if token is None or token.name == "ASCII_59":
            if begin is not None:
                end = token.start if token is not None else len(sql)
                text = sql[begin:end].strip()
                try:
                    raws = parse_sql(text)
                except parser.ParseError as exc:
                    line = sql.count("\n", 0, begin) + 1
                    pieces.append(_Piece(text, begin, None, f"line {line}: {exc.args[0]}"))
                else:
                    pieces.extend(_Piece(text, begin, raw.stmt) for raw in raws)
            begin = None
            continue
        if begin is None:
            begin = token.start
    return pieces


def _lead(text: str) -> int:
    """Characters of whitespace and comments before a statement's first token."""
    stripped = text.lstrip()
    return len(text) - len(stripped)


def _is_bookkeeping(node: Any) -> bool:
    if isinstance(node, ast.CreateStmt | ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
        return node.relation is not None and node.relation.relname == BOOKKEEPING_TABLE
    return False
