"""Draw the revision graph as one small SVG per table row, from the lanes lib/alembic lays out.

Rows stack without gaps, so each row's SVG joins the next: lines arriving at the top of a row
end at its node, lines leaving the node reach the bottom at their parents' columns.
"""

from __future__ import annotations

from typing import Any

from django.utils.safestring import SafeString, mark_safe

ROW = 40  # px: must match the history table's row height (templates/schema/history.html)
COL = 16
PAD = 10
COLOURS = {"current": "#1a7f4b", "pending": "#c27c00", "applied": "#1f4fd1", "unknown": "#8a94a6"}


def _x(col: int) -> int:
    return PAD + col * COL


def _svg(rev: dict[str, Any], width: int) -> SafeString:
    mid = ROW // 2
    x = _x(rev["lane"])
    lines = [f'<line x1="{_x(c)}" y1="0" x2="{_x(c)}" y2="{ROW}"/>' for c in rev["passing"]]
    lines += [
        f'<path d="M{_x(c)} 0 C{_x(c)} {mid // 2} {x} {mid // 2} {x} {mid}"/>'
        for c in rev["incoming"]
    ]
    lines += [
        f'<path d="M{x} {mid} C{x} {mid + mid // 2} {_x(e["lane"])} {mid + mid // 2} '
        f'{_x(e["lane"])} {ROW}"/>'
        for e in rev["edges"]
    ]
    state = (
        "current"
        if rev["is_current"]
        else "pending"
        if rev["is_pending"]
        else "applied"
        if rev["is_applied"]
        else "unknown"
    )
    radius = 6 if rev["is_current"] else 5
    node = (
        f'<circle cx="{x}" cy="{mid}" r="{radius}" fill="{COLOURS[state]}" stroke="#fff" '
        'stroke-width="2"/>'
    )
    if rev["is_merge"]:
        node += f'<circle cx="{x}" cy="{mid}" r="9" fill="none" stroke="{COLOURS[state]}"/>'
    px = PAD * 2 + max(width - 1, 0) * COL
    return mark_safe(
        f'<svg class="lanes" width="{px}" height="{ROW}" viewBox="0 0 {px} {ROW}" '
        f'aria-hidden="true"><g stroke="#9aa6b8" stroke-width="2" fill="none">{"".join(lines)}'
        f"</g>{node}</svg>"
    )


def draw(revisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history's revisions (newest first), each with its ``svg`` cell."""
    width = max((rev["width"] for rev in revisions), default=1)
    return [rev | {"svg": _svg(rev, width)} for rev in revisions]
