"""Writing notifications: one outbox row per recipient, in the event's own transaction.

``emit()`` is what the rest of Runway calls, inside the ``transaction.atomic()`` block that makes
the event happen (an approval step opening, a step failing): the rows exist exactly when the event
does, and each is sent to a worker (the ``notification`` job kind, :mod:`dashboard.notify.delivery`)
only once that transaction commits. Nothing is delivered here: a receiver that hangs or fails
never holds up the caller. ``emit()`` never raises either: a notification that cannot be written
is logged, and the caller's event stands.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q

from dashboard.accounts.roles import role_of
from dashboard.audit.chain import Actor, record
from dashboard.databases.models import ManagedDatabase
from dashboard.jobs import lifecycle as jobs
from dashboard.notify import events
from dashboard.notify.models import Channel, Outbox, Preference

logger = logging.getLogger(__name__)

MAX_SUBJECT = 200


def email_enabled() -> bool:
    """Email is on when an SMTP host is configured (or RUNWAY_EMAIL_BACKEND chooses another)."""
    return bool(settings.EMAIL_HOST or settings.RUNWAY_EMAIL_BACKEND)


def absolute(url: str) -> str:
    """A link a person can open from their mail: relative URLs joined to RUNWAY_PUBLIC_URL."""
    if not url:
        return ""
    return urljoin(settings.RUNWAY_PUBLIC_URL.rstrip("/") + "/", url.lstrip("/"))


def one_line(text: str, limit: int = MAX_SUBJECT) -> str:
    """A subject: one line (no header can be smuggled into an email), at most ``limit``."""
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class Recipient:
    target: str
    user: User | None = None
    address: str = ""
    channel: Channel | None = None


def wanted_events(user: User, preference: Preference | None) -> list[str]:
    """What ``user`` gets by email: their own choice, else their role's defaults."""
    if preference is not None:
        return list(preference.events)
    return events.defaults_for(role_of(user))


def email_recipients(event: str, database: ManagedDatabase | None) -> list[Recipient]:
    """Users with a role and an address who want ``event`` and have not muted ``database``."""
    if not email_enabled() or event not in events.BY_NAME:
        return []
    users = (
        User.objects.filter(is_active=True)
        .exclude(email="")
        .select_related("notification_preference")
        .prefetch_related("notification_preference__muted")
        .order_by("username")
    )
    found = []
    for user in users:
        if role_of(user) is None:
            continue
        preference = getattr(user, "notification_preference", None)
        if event not in wanted_events(user, preference):
            continue
        muted = preference.muted.all() if preference is not None else []
        if database is not None and any(m.pk == database.pk for m in muted):
            continue
        found.append(Recipient(f"{user.get_username()} <{user.email}>", user, user.email))
    return found


def channels_for(event: str, database: ManagedDatabase | None) -> list[Channel]:
    """Enabled channels that listen to ``event``: the database's own and the global ones."""
    where = Q(database=None) | Q(database=database) if database is not None else Q(database=None)
    return list(
        Channel.objects.filter(where, enabled=True, events__contains=[event])
        .select_related("database")
        .order_by("pk")
    )


def emit(
    event: str,
    database: ManagedDatabase | None,
    subject: str,
    body: str,
    url: str = "",
    payload: Mapping[str, Any] | None = None,
) -> list[Outbox]:
    """Write the event's notifications (one row per user and per channel) in the caller's
    transaction, and send them to the workers when it commits. Call it inside the
    ``transaction.atomic()`` block of the event; rolled back with it. Never raises."""
    try:
        with transaction.atomic():
            recipients = email_recipients(event, database)
            recipients += [Recipient(str(c), channel=c) for c in channels_for(event, database)]
            return _write(None, event, database, subject, body, url, payload, recipients)
    except Exception:
        logger.exception("the %s notification could not be written", event)
        return []


def send_test(actor: Actor, channel: Channel) -> Outbox:
    """A test notification to one channel (its Test button), audited."""
    where = channel.database.name if channel.database else "every database"
    with transaction.atomic():
        (row,) = _write(
            actor,
            events.TEST,
            channel.database,
            f"Test notification from Runway ({channel.name})",
            f"{actor.get_username()} sent this to check the channel {channel.name} ({where}).",
            channel.database.get_absolute_url() if channel.database else "/",
            {"channel": channel.name},
            [Recipient(str(channel), channel=channel)],
        )
        return row


def _write(
    actor: Actor | None,
    event: str,
    database: ManagedDatabase | None,
    subject: str,
    body: str,
    url: str,
    payload: Mapping[str, Any] | None,
    recipients: list[Recipient],
) -> list[Outbox]:
    if not recipients:
        return []
    event_id = uuid.uuid4()
    common = {
        "event_id": event_id,
        "event": event,
        "database": database,
        "subject": one_line(subject),
        "body": body[:20_000],
        "url": absolute(url)[:1000],
        "payload": dict(payload or {}),
    }
    rows = Outbox.objects.bulk_create(
        Outbox(
            **common,
            channel=r.channel,
            user=r.user,
            address=r.address,
            target=r.target[:400],
        )
        for r in recipients
    )
    record(
        actor,
        "notification.queued",
        database,
        object_type="" if database is not None else "notification",
        details={
            "event": event,
            "event_id": str(event_id),
            "subject": common["subject"],
            "to": [r.target for r in recipients],
            "rows": [row.pk for row in rows],
        },
    )
    for row in rows:
        jobs.enqueue(row)
    return rows
