"""Tiny server-side SVG plots: a sparkline is a polyline, its points and their tooltips.

No JavaScript and no library: the page stays a plain document that prints and screenshots as is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe


def sparkline(
    values: Sequence[float | None],
    labels: Sequence[str] = (),
    *,
    fmt: Callable[[float], str] = lambda v: f"{v:g}",
    width: int = 280,
    height: int = 56,
    title: str = "",
) -> SafeString:
    """An inline SVG line through ``values`` (None leaves a gap), the last point marked.

    Each point carries a ``<title>`` (its label and formatted value) for a hover tooltip.
    """
    known = [v for v in values if v is not None]
    if not known:
        return mark_safe('<span class="muted small">no data yet</span>')
    pad = 5
    low, high = min(known), max(known)
    spread = (high - low) or 1.0
    step = (width - 2 * pad) / max(len(values) - 1, 1)

    def y(v: float) -> float:
        return height - pad - (v - low) / spread * (height - 2 * pad)

    segments: list[list[tuple[float, float]]] = [[]]
    dots = []
    for i, v in enumerate(values):
        if v is None:
            segments.append([])
            continue
        x = pad + i * step if len(values) > 1 else width / 2
        segments[-1].append((x, y(v)))
        label = labels[i] if i < len(labels) else ""
        dots.append((x, y(v), f"{label}: {fmt(v)}" if label else fmt(v)))
    lines = "".join(
        '<polyline fill="none" stroke="#1f4fd1" stroke-width="1.8" stroke-linejoin="round" '
        f'points="{" ".join(f"{x:.1f},{yy:.1f}" for x, yy in seg)}"/>'
        for seg in segments
        if len(seg) > 1
    )
    points = "".join(
        f'<circle cx="{x:.1f}" cy="{yy:.1f}" r="{3.2 if n == len(dots) - 1 else 2}" '
        f'fill="{"#1f4fd1" if n == len(dots) - 1 else "#9db4ee"}"><title>{escape(tip)}</title>'
        "</circle>"
        for n, (x, yy, tip) in enumerate(dots)
    )
    label = escape(title or f"from {fmt(low)} to {fmt(high)}")
    return mark_safe(  # noqa: S308 - every interpolated text above is escaped or numeric
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{label}">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'stroke="#dde3ea"/>'
        f"{lines}{points}</svg>"
    )
