from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def notes_count(findings: list[Any]) -> int:
    """How many findings are style notes (they never raise a grade)."""
    return sum(1 for f in findings if f.severity == "note")
