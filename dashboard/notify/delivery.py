"""Delivering an outbox row: the ``notification`` job kind.

A worker claims the row (the one job lifecycle: two workers never send one notification), makes
one attempt (an email through Django's mail framework, or a webhook POST with short timeouts),
and records it as a :class:`DeliveryAttempt` (when, how long, the HTTP status or the error).
A failure worth another try (a timeout, a refused connection, HTTP 5xx, 408 or 429, an SMTP
hiccup) is retried by the lifecycle after ``RUNWAY_NOTIFY_RETRY_DELAYS`` (10 s, 1 min, 5 min,
15 min by default), five attempts in all; one that will not get better (HTTP 4xx, a refused
reference or URL, a refused recipient) fails at once. Both ends are audited.

Deliveries go to ``RUNWAY_NOTIFY_QUEUE`` when it is set (a worker must consume it), so that a
slow receiver never holds a worker that a run's step is waiting for.
"""

from __future__ import annotations

import smtplib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.utils import timezone

from dashboard.audit.chain import record
from dashboard.jobs import lifecycle as jobs
from dashboard.notify import events, webhooks
from dashboard.notify.models import ChannelKind, DeliveryAttempt, Outbox
from dashboard.notify.webhooks import WebhookRefused

MAX_ATTEMPTS = 5
SLACK_TEXT = 2900  # Slack refuses a section's text past 3000 characters


@dataclass
class Failure(Exception):
    """One attempt failed: why (never the URL), the HTTP status if any, and whether another
    attempt may succeed."""

    message: str
    transient: bool
    status: int | None = None

    def __str__(self) -> str:
        return self.message


# --- Bodies ---


def json_body(row: Outbox) -> dict[str, Any]:
    """The generic webhook's body."""
    db = row.database
    return {
        "event": row.event,
        "title": row.subject,
        "text": row.body,
        "url": row.url,
        "database": db.name if db else None,
        "environment": db.environment if db else None,
        "id": str(row.event_id),
        "time": row.created_at.isoformat(),
        "details": row.payload,
        "source": "runway",
    }


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(row: Outbox) -> dict[str, Any]:
    """A Slack-compatible body: ``text`` (what notifications and older clients show) and blocks
    (the title linked to the page, the body, where it comes from)."""
    title = _mrkdwn(row.subject)
    headline = f"*<{row.url}|{title}>*" if row.url else f"*{title}*"
    where = row.database.name if row.database else "Runway"
    if row.database:
        where += f" ({row.database.get_environment_display().lower()})"
    text = f"{headline}\n{_mrkdwn(row.body)}"
    return {
        "text": f"{row.subject} {row.url}".strip(),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text[:SLACK_TEXT]}},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"Runway · {_mrkdwn(where)} · {row.event_label}"}
                ],
            },
        ],
    }


def email_text(row: Outbox) -> str:
    lines = [row.body.strip(), ""]
    if row.url:
        lines += [f"Open it in Runway: {row.url}", ""]
    lines += [
        "--",
        f"Runway · {events.label(row.event)}" + (f" · {row.database.name}" if row.database else ""),
        "Choose what you get on the Notifications page (the menu beside your name).",
    ]
    return "\n".join(lines)


# --- Sending ---


def _webhook(row: Outbox) -> int:
    channel = row.channel
    assert channel is not None
    try:
        target = webhooks.check_url(webhooks.resolve_url(channel.url_ref))
    except WebhookRefused as exc:
        raise Failure(str(exc), transient=False) from None
    body = slack_body(row) if channel.kind == ChannelKind.WEBHOOK_SLACK else json_body(row)
    try:
        response = webhooks.post_json(target, body, timeout=settings.RUNWAY_WEBHOOK_TIMEOUT)
    except TimeoutError as exc:
        timeout = settings.RUNWAY_WEBHOOK_TIMEOUT
        why = str(exc) or "timed out"
        raise Failure(f"No answer within {timeout} s ({why}).", transient=True) from None
    except ConnectionRefusedError:
        raise Failure(f"{target.host} refused the connection.", transient=True) from None
    except OSError as exc:  # reset, unreachable, TLS, cut off after twice the timeout
        raise Failure(f"{target.host}: {type(exc).__name__}: {exc}"[:500], transient=True) from None
    except Exception as exc:  # the receiver spoke something other than HTTP
        raise Failure(f"{target.host}: {type(exc).__name__}", transient=True) from None
    status = response.status
    if 200 <= status < 300:
        return status
    reply = response.body[:200].decode("utf-8", "replace").strip()
    said = f" ({reply})" if reply and reply.isprintable() else ""
    if 300 <= status < 400:
        raise Failure(
            f"Redirected{said}: Runway follows no redirects; give the final URL.",
            transient=False,
            status=status,
        )
    transient = status >= 500 or status in (408, 425, 429)
    raise Failure(f"The receiver answered {status}{said}.", transient=transient, status=status)


def _email(row: Outbox) -> None:
    channel = row.channel
    to = list(channel.addresses) if channel is not None else [row.address]
    message = EmailMessage(
        subject=f"[Runway] {row.subject}",
        body=email_text(row),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=to,
        connection=get_connection(timeout=settings.EMAIL_TIMEOUT),
    )
    try:
        message.send()
    except smtplib.SMTPRecipientsRefused as exc:
        raise Failure(f"The mail server refused {', '.join(exc.recipients)}.", False) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise Failure(f"The mail server refused the log-in ({exc.smtp_code}).", False) from None
    except smtplib.SMTPResponseException as exc:
        permanent = 500 <= exc.smtp_code < 600
        said = exc.smtp_error
        text = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said or "")
        why = f"The mail server answered {exc.smtp_code} {text}".strip()[:500]
        raise Failure(why, not permanent) from None
    except TimeoutError:
        timeout = settings.EMAIL_TIMEOUT
        raise Failure(f"No answer from the mail server within {timeout} s.", True) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise Failure(f"Mail server: {type(exc).__name__}: {exc}"[:500], True) from None


def perform(row: Outbox, context: jobs.Context) -> None:
    """One attempt, recorded; a transient failure raises ``jobs.Transient`` (the lifecycle
    retries it), a permanent one fails the row now."""
    row = Outbox.objects.select_related("channel", "database").get(pk=row.pk)
    started, clock = timezone.now(), time.monotonic()
    status: int | None = None
    try:
        if row.channel_id is None and not row.address:
            raise Failure("Its channel was removed before it could be sent.", transient=False)
        if row.channel is not None and row.channel.is_webhook:
            status = _webhook(row)
        else:
            _email(row)
    except Failure as failure:
        _attempt(row, started, clock, failure.status, failure.message)
        if failure.transient and row.attempts < MAX_ATTEMPTS:
            raise jobs.Transient(failure.message) from None
        _give_up(row, failure)
        return
    with transaction.atomic():
        _attempt(row, started, clock, status, "", ok=True)
        row.succeed()


def _attempt(
    row: Outbox,
    started: datetime,
    clock: float,
    status: int | None,
    error: str,
    *,
    ok: bool = False,
) -> DeliveryAttempt:
    return DeliveryAttempt.objects.create(
        outbox=row,
        number=row.attempts,
        started_at=started,
        duration_ms=max(0, round((time.monotonic() - clock) * 1000)),
        status_code=status,
        ok=ok,
        error=error[:2000],
    )


def _give_up(row: Outbox, failure: Failure) -> None:
    why = failure.message
    if failure.transient:
        why = f"Gave up after {row.attempts} attempts: {why}"
    with transaction.atomic():
        if row.fail(why[:2000]):
            record(
                None,
                "notification.failed",
                row,
                details={"job": row.pk, "event": row.event, "to": row.target, "reason": why[:500]},
            )


def retry_delays() -> list[float]:
    return list(settings.RUNWAY_NOTIFY_RETRY_DELAYS)


jobs.register(
    jobs.Kind(
        "notification",
        Outbox,
        perform,
        # One attempt is a connection with a few seconds' timeouts: a minute without a beat is
        # a dead worker. Queued rows wait out the retry delays (about 21 minutes in all by
        # default); one nobody took for 6 hours is told too late to matter.
        stale_after=60,
        heartbeat_every=5,
        queued_after=6 * 3600,
        max_attempts=MAX_ATTEMPTS,
        retry_delays=retry_delays,
        queue=lambda: settings.RUNWAY_NOTIFY_QUEUE,
        describe=lambda row: f"notification #{row.pk}",
    )
)
