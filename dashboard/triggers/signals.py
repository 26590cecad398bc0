"""Measuring each signal once: what a rule's sample holds. Each function returns the value in
the signal's unit and a short note, or raises SignalError saying why it could not measure."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.utils import timezone

from dashboard.databases import credentials
from dashboard.lib import pg
from dashboard.lib.secrets import SecretError
from dashboard.notify import webhooks
from dashboard.schema import dataloss
from dashboard.triggers.models import Rule, Signal, Watch

HTTP_TIMEOUT = 3.0  # a health URL slower than this is failing
PROBE_TIMEOUT_MS = 5000


class SignalError(RuntimeError):
    pass


def _connect(watch: Watch) -> pg.Connection:
    db = watch.database
    return pg.connect(db.dsn, credentials.password(db), timeout=settings.RUNWAY_CONNECT_TIMEOUT)


def _fetch(url: str) -> webhooks.Response:
    try:
        target = webhooks.check_url(url)
        return webhooks.get(target, timeout=HTTP_TIMEOUT)
    except webhooks.WebhookRefused as exc:
        raise SignalError(str(exc).replace("webhook", "signal")) from None


def execution_minutes(watch: Watch) -> float:
    end = watch.executed_at or timezone.now()
    return (end - watch.started_at).total_seconds() / 60


def measure(rule: Rule, watch: Watch) -> tuple[float | None, str]:
    """One sample of ``rule``'s signal for ``watch``."""
    signal = rule.signal
    try:
        if signal == Signal.EXECUTION_TIME:
            return execution_minutes(watch), ""
        if signal == Signal.REHEARSAL_RATIO:
            if not watch.rehearsed_seconds:
                return None, "no rehearsal timed this chain"
            return execution_minutes(watch) * 60 / watch.rehearsed_seconds, ""
        if signal == Signal.DATA_LOSS:
            if watch.snapshot is None:
                return None, "no snapshot was taken before the run"
            found = dataloss.compare(watch.database, watch.snapshot, list(watch.revisions))
            lost = sum(f.rows for f in found.losses)
            return float(lost), found.summary()[:500]
        if signal == Signal.HEALTH:
            try:
                answer = _fetch(rule.config.get("url", ""))
            except (OSError, TimeoutError) as exc:
                return 100.0, f"no answer: {exc.__class__.__name__}"
            ok = 200 <= answer.status < 300
            return (0.0 if ok else 100.0), f"HTTP {answer.status}"
        if signal == Signal.PERFORMANCE:
            with _connect(watch) as conn:
                try:
                    ms = pg.probe_latency_ms(conn, rule.config.get("query", "SELECT 1"))
                except pg.errors.QueryCanceled:  # slower than the statement timeout
                    return float(PROBE_TIMEOUT_MS), f"over {PROBE_TIMEOUT_MS} ms (timed out)"
            return ms, f"{ms:.2f} ms"
        if signal == Signal.CUSTOM_SQL:
            with _connect(watch) as conn:
                return pg.scalar_signal(conn, rule.config.get("query", "")), ""
        if signal == Signal.CUSTOM_HTTP:
            answer = _fetch(rule.config.get("url", ""))
            return _number(answer.body), f"HTTP {answer.status}"
    except (pg.Error, SecretError, ValueError, OSError) as exc:
        raise SignalError(
            str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        ) from exc
    raise SignalError(f"unknown signal {signal}")


def _number(body: bytes) -> float:
    text = body.decode(errors="replace").strip()
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = text
    if isinstance(data, dict):
        data = data.get("value")
    if isinstance(data, bool) or not isinstance(data, int | float | str):
        raise ValueError('the answer holds no number (plain, or JSON {"value": n})')
    try:
        return float(data)
    except ValueError:
        raise ValueError(f"the answer {text[:60]!r} is not a number") from None


def baseline(rule: Rule, watch: Watch) -> float | None:
    """What the signal was before the run, for signals measured against it."""
    if rule.signal != Signal.PERFORMANCE:
        return None
    samples = [measure(rule, watch)[0] for _ in range(3)]
    known = sorted(v for v in samples if v is not None)
    return known[len(known) // 2] if known else None
