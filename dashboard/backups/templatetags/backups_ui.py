from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def seconds(value: float | None) -> str:
    """A duration for people: '0.42 s', '12 s', '3 min 05 s', '2 h 10 min'."""
    if value is None:
        return "–"
    value = float(value)
    if value < 10:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.0f} s"
    minutes, secs = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def elapsed(since: datetime | None) -> str:
    """Seconds since ``since``, formatted like ``seconds``."""
    if since is None:
        return "–"
    return seconds((timezone.now() - since).total_seconds())


@register.filter
def failed_checks(checks: list[dict] | None) -> int:
    """How many of a validation's checks did not pass."""
    return sum(1 for check in checks or () if not check.get("ok"))


@register.filter
def minimum(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


@register.filter
def maximum(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None
