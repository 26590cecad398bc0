from __future__ import annotations

from typing import Any

from django import template
from django.template.defaultfilters import filesizeformat

register = template.Library()


@register.filter
def notes_count(findings: list[Any]) -> int:
    """How many findings are style notes (they never raise a grade)."""
    return sum(1 for f in findings if f.severity == "note")


@register.filter
def verdict_class(verdict: str) -> str:
    return {"pass": "b-ok", "warn": "b-warn", "fail": "b-bad"}.get(verdict, "b-muted")


@register.filter
def rows_bytes(size: Any) -> str:
    """[rows, bytes] from a check's table_sizes as "~1,234 rows, 5.1 MB"."""
    rows, total = size
    return f"~{int(rows):,} rows, {filesizeformat(total)}"


@register.filter
def pretty_json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, sort_keys=True, default=str)


@register.filter
def get_item(mapping: Any, key: Any) -> Any:
    return mapping.get(key) if hasattr(mapping, "get") else None


@register.filter
def slice_item(sequence: Any, index: int) -> Any:
    try:
        return sequence[int(index)]
    except (IndexError, TypeError, ValueError):
        return None
