"""The run page's live progress of a step (see :mod:`runbooks.live`)."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString

from runbooks import live

register = template.Library()


@register.filter
def live_view(job: Any) -> dict[str, Any] | None:
    """The view of a job's progress snapshot: live while the job runs, as it ended after."""
    if job is None:
        return None
    return live.view(getattr(job, "progress", None), live=bool(job.is_active))


@register.filter
def finished_view(job: Any) -> dict[str, Any] | None:
    """An ended migration step's execution: its evidence's series and timings (else the last
    snapshot's), and its abort or recovery."""
    if job is None or job.is_active:
        return None
    progress = dict(getattr(job, "progress", None) or {})
    watched = (job.evidence or {}).get("watch") or {}
    if not progress and not watched:
        return None
    if watched:
        progress["series"] = watched.get("series") or progress.get("series")
        progress["timings"] = watched.get("timings") or progress.get("timings")
    found = live.view(progress, live=False)
    if found is not None:
        found["abort"] = (job.evidence or {}).get("abort")
    return found


@register.filter
def exec_plot(series: dict[str, Any] | None) -> SafeString:
    return live.plot(series)


@register.filter
def secs(value: float | None) -> str:
    return live.seconds(value)


@register.filter
def ms(value: float | None) -> str:
    return live.seconds(value / 1000 if value is not None else None)
