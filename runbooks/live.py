"""A run step's live progress: written by its action while it runs (:class:`JobChannel`, for
:class:`dashboard.schema.watch.Watcher`), read by the run page (:func:`view`, :func:`plot`).

The snapshot lives on the step's job row (``StepJob.progress``), written about once a second
from the watcher's thread (not with the heartbeat, which beats every 5 s), and only while the job
runs; it is kept afterwards as the attempt's last word on where it was. A stop request (who,
why, the grace period) is on the row too (``StepJob.stop_request``), beside the lifecycle's own
cancel request, which the watcher reads with every snapshot so an abort is seen within a second.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from dashboard.jobs.models import JobState
from dashboard.schema import guard
from dashboard.schema.watch import StopRequest
from runbooks.actions import Context
from runbooks.models import StepJob

# --- Written by the worker ---


class JobChannel:
    """A :class:`dashboard.schema.watch.Channel` over the step's job row."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.job: StepJob = ctx.job
        self._asked: dict[str, Any] | None = None

    def publish(self, snapshot: dict[str, Any]) -> None:
        rows = StepJob.objects.filter(pk=self.job.pk, state=JobState.RUNNING)
        rows.update(progress=snapshot)
        found = rows.values_list("cancel_requested_at", "stop_request").first()
        if found is not None and found[0] is not None:
            self._asked = {"requested_at": found[0].isoformat(), **(found[1] or {})}

    def stop_request(self) -> StopRequest | None:
        if self._asked is None and self.ctx.wait_for_cancel(0):
            # Seen by the heartbeat first: read who asked and why.
            data = StepJob.objects.filter(pk=self.job.pk).values_list("stop_request", flat=True)
            self._asked = dict(data.first() or {})
        return StopRequest.of(self._asked) if self._asked is not None else None


# --- Read by the page ---

PHASES = {
    "waiting": "waiting, not queued, for conflicting sessions to finish",
    "attempt": "running",
    "backoff": "backing off before the next attempt",
    "cleanup": "dropping an INVALID index a failed build left",
    "done": "revision done",
    "failed": "failed",
    "stopped": "stopped",
}
STALE_SECONDS = 10  # a snapshot older than this while the job runs: say so


def _parse(moment: Any) -> datetime | None:
    if not moment:
        return None
    try:
        return datetime.fromisoformat(str(moment))
    except ValueError:
        return None


def _since(moment: Any, now: datetime) -> float | None:
    found = _parse(moment)
    return max(0.0, (now - found).total_seconds()) if found is not None else None


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 90:
        return f"{value:.1f} s"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes} min {rest:02d} s"


def _percent(done: int, total: int) -> float | None:
    return round(100.0 * done / total, 1) if total > 0 else None


# The phases of CREATE INDEX CONCURRENTLY in the order PostgreSQL goes through them
# (pg_stat_progress_create_index); a plain CREATE INDEX has only the first and the third.
CONCURRENT_STEPS = (
    "initializing",
    "waiting for writers before build",
    "building index",
    "waiting for writers before validation",
    "index validation: scanning index",
    "index validation: sorting tuples",
    "index validation: scanning table",
    "waiting for old snapshots",
    "waiting for readers before marking dead",
    "waiting for readers before dropping",
)


def index_build(build: dict[str, Any] | None) -> dict[str, Any] | None:
    """The bar of a CREATE INDEX under way: what it is doing and how far, in the unit its
    phase counts (blocks scanned, tuples loaded, transactions waited for; none while
    sorting)."""
    if not build:
        return None
    phase = str(build.get("phase") or "")
    command = str(build.get("command") or "CREATE INDEX")
    found: dict[str, Any] = {
        "command": command,
        "phase": phase,
        "table": build.get("table"),
        "index": build.get("index"),
        "percent": None,
        "done": "",
        "step": "",
        "waiting_for": build.get("current_locker_pid"),
    }
    if "CONCURRENTLY" in command:
        known = next((i for i, p in enumerate(CONCURRENT_STEPS) if phase.startswith(p)), None)
        if known is not None:
            total = 8 if command.startswith("CREATE") else len(CONCURRENT_STEPS)
            found["step"] = f"step {known + 1} of {total}"

    def counted(done_key: str, total_key: str, unit: str) -> None:
        total = int(build.get(total_key) or 0)
        if total > 0:
            done = int(build.get(done_key) or 0)
            found["percent"] = _percent(done, total)
            found["done"] = f"{done:,} of {total:,} {unit}"

    if phase.startswith("waiting"):
        counted("lockers_done", "lockers_total", "transactions it waits for have ended")
    elif "sorting" in phase:
        found["done"] = "sorting: this phase reports no counter"
    elif "loading tuples" in phase:
        counted("tuples_done", "tuples_total", "tuples")
    elif "scanning" in phase:
        counted("blocks_done", "blocks_total", "blocks")
    return found


def view(progress: dict[str, Any] | None, *, live: bool = True) -> dict[str, Any] | None:
    """What the page shows of a snapshot: the headline, the statement and its time, what blocks
    it, the index build, the timings, the application's numbers and an abort under way."""
    if not progress:
        return None
    now = datetime.now(UTC)
    phase = str(progress.get("phase") or "")
    backend = progress.get("backend") or {}
    blocked_by = list(progress.get("blocked_by") or [])
    waiting_for = list(progress.get("waiting_for") or [])
    blockers = blocked_by or (waiting_for if phase in ("waiting", "backoff") else [])
    statement = str(progress.get("statement") or "")
    running_for = _since(progress.get("statement_started_at"), now) if statement else None
    if not live:
        running_for = None
    build = index_build(progress.get("index_build"))
    revision = progress.get("revision") or ""
    index, total = progress.get("index") or 0, progress.get("total") or 0
    series = progress.get("series") or {}
    traffic = progress.get("traffic") or {}
    stopping = progress.get("stopping")
    words = PHASES.get(phase, phase or "starting")
    harmless = False  # it waits, but the application's reads and writes go on
    if phase == "attempt" and build is not None and build["phase"].startswith("waiting"):
        words = f"building {build['index'] or 'an index'} concurrently: {build['phase']}"
        harmless = True
    elif phase == "attempt" and blockers:
        words = "blocked: its lock request waits, and the application may queue behind it"
    elif phase == "attempt" and build is not None:
        words = f"building {build['index'] or 'an index'} concurrently"
    elif phase == "waiting" and blockers:
        words = "waiting, not queued, for conflicting sessions to finish"
        harmless = True
    headline = (
        f"Revision {index} of {total}: {revision} — {words}"
        if revision
        else "Taking the migration lock…"
    )
    age = _since(progress.get("updated_at"), now)
    return {
        "headline": headline,
        "phase": phase,
        "blocked": bool(blockers),
        "harmless": harmless,
        "revision": revision,
        "index": index,
        "total": total,
        "attempt": progress.get("attempt") or 0,
        "lock_timeout_ms": progress.get("lock_timeout_ms"),
        "statement": statement,
        "running_for": seconds(running_for) if running_for is not None else "",
        "backend": backend,
        "blockers": [_blocker(b, now) for b in blockers],
        "build": build,
        "timings": list(progress.get("timings") or []),
        "series": series,
        "traffic": traffic,
        "stopping": stopping,
        "recovery": progress.get("recovery"),
        "stale": live and age is not None and age > STALE_SECONDS,
        "age": seconds(age),
    }


def _blocker(b: dict[str, Any], now: datetime) -> dict[str, Any]:
    age = b.get("seconds")
    if age is None:
        age = _since(b.get("since"), now)
    return {
        "pid": b.get("pid"),
        "user": b.get("user") or "?",
        "application": b.get("application") or "",
        "state": b.get("state") or "",
        "query": b.get("query") or "",
        "since": b.get("since") or "",
        "for": seconds(age) if age is not None else "",
        # A lock on a relation names it; one on a transaction (what a CONCURRENTLY build or a
        # row lock waits for) is the blocker's open transaction itself.
        "mode": (b.get("mode") or "") if b.get("table") or not b.get("mode") else "",
        "holds": _holds(b),
        "table": b.get("table") or "",
        "granted": b.get("granted"),
    }


def _holds(b: dict[str, Any]) -> str:
    mode, table = guard.mode_name(b.get("mode") or ""), b.get("table") or ""
    if table:
        return f"{mode} on {table}" if mode else table
    if mode:
        return "its open transaction"
    return "—"


# --- The plot ---

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 560, 128, 44, 52, 10, 20
TPS_COLOUR, STALL_COLOUR = "#1f4fd1", "#b42318"


def _nice(value: float) -> float:
    """A round ceiling for an axis (1, 2, 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10 ** len(str(int(value))) / 10
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def plot(series: dict[str, Any] | None) -> SafeString:
    """An inline SVG of the application during the execution: commits per second (blue line,
    left axis) and the longest lock wait of any other session (red bars, right axis), over the
    seconds since the migration began."""
    series = series or {}
    t = [float(v) for v in series.get("t") or []]
    tps = list(series.get("tps") or [])
    stall = [float(v or 0) for v in series.get("stall_ms") or []]
    if len(t) < 2:
        return mark_safe('<span class="muted small">collecting the first samples…</span>')
    span = max(t[-1] - t[0], 1.0)
    top_tps = _nice(max([float(v) for v in tps if v is not None] or [1.0]))
    top_stall = _nice(max(stall + [STALL_FLOOR_MS]))
    inner_w, inner_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def x(v: float) -> float:
        return PAD_L + (v - t[0]) / span * inner_w

    def y(v: float, top: float) -> float:
        return PAD_T + inner_h - min(v / top, 1.0) * inner_h

    bar = max(inner_w / len(t) - 1, 1.0)
    bars = "".join(
        f'<rect x="{x(tt) - bar / 2:.1f}" y="{y(s, top_stall):.1f}" width="{bar:.1f}" '
        f'height="{PAD_T + inner_h - y(s, top_stall):.1f}" fill="{STALL_COLOUR}" '
        f'fill-opacity=".55"><title>{tt:.0f} s: longest lock wait {s:.0f} ms</title></rect>'
        for tt, s in zip(t, stall, strict=False)
        if s > 0
    )
    segments: list[list[str]] = [[]]
    for tt, v in zip(t, tps, strict=False):
        if v is None:
            segments.append([])
            continue
        segments[-1].append(f"{x(tt):.1f},{y(float(v), top_tps):.1f}")
    lines = "".join(
        f'<polyline fill="none" stroke="{TPS_COLOUR}" stroke-width="1.8" '
        f'stroke-linejoin="round" points="{" ".join(seg)}"/>'
        for seg in segments
        if len(seg) > 1
    )
    base = PAD_T + inner_h
    grid = (
        f'<line x1="{PAD_L}" y1="{base}" x2="{W - PAD_R}" y2="{base}" stroke="#c5ceda"/>'
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{W - PAD_R}" y2="{PAD_T}" stroke="#eef1f5"/>'
    )
    labels = (
        f'<text x="{PAD_L - 4}" y="{PAD_T + 4}" text-anchor="end" fill="{TPS_COLOUR}">'
        f"{top_tps:g}</text>"
        f'<text x="{PAD_L - 4}" y="{base}" text-anchor="end" fill="{TPS_COLOUR}">0</text>'
        f'<text x="{PAD_L - 4}" y="{PAD_T + inner_h / 2 + 4}" text-anchor="end" '
        f'fill="{TPS_COLOUR}">tx/s</text>'
        f'<text x="{W - PAD_R + 4}" y="{PAD_T + 4}" fill="{STALL_COLOUR}">'
        f"{_ms(top_stall)}</text>"
        f'<text x="{W - PAD_R + 4}" y="{base}" fill="{STALL_COLOUR}">0</text>'
        f'<text x="{W - PAD_R + 4}" y="{PAD_T + inner_h / 2 + 4}" fill="{STALL_COLOUR}">'
        "stall</text>"
        f'<text x="{PAD_L}" y="{H - 4}" fill="#6b7785">0 s</text>'
        f'<text x="{W - PAD_R}" y="{H - 4}" text-anchor="end" fill="#6b7785">{span:.0f} s</text>'
    )
    summary = escape(
        f"Application during the migration: up to {top_tps:g} commits/s; "
        f"peak stall {series.get('peak_stall_ms', 0):.0f} ms"
    )
    return mark_safe(  # every interpolated text is numeric or escaped
        f'<svg class="exec-plot" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{summary}" font-size="11" font-family="sans-serif">'
        f"{grid}{bars}{lines}{labels}</svg>"
    )


STALL_FLOOR_MS = 500.0  # the stall axis reaches at least this (small waits stay small)


def _ms(value: float) -> str:
    return f"{value / 1000:g} s" if value >= 1000 else f"{value:.0f} ms"
