"""Where notifications go (channels, each user's preferences), and what was sent (the outbox,
one job per recipient, and each delivery attempt).

A webhook's URL is a secret (whoever holds a Slack webhook URL may post to the channel): a
channel stores only a reference to it (``env:NAME`` or ``file:/path``), resolved by the worker
at each delivery, as a managed database's password is.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from dashboard.databases.models import ManagedDatabase
from dashboard.jobs.models import Job
from dashboard.notify import events


class ChannelKind(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK_JSON = "webhook-json", "Webhook (JSON)"
    WEBHOOK_SLACK = "webhook-slack", "Webhook (Slack-compatible)"


WEBHOOKS = (ChannelKind.WEBHOOK_JSON, ChannelKind.WEBHOOK_SLACK)


class Channel(models.Model):
    """A place notifications go: for one database's events, or for every database's (global)."""

    database = models.ForeignKey(
        ManagedDatabase,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notification_channels",
        help_text="Empty: every database's events",
    )
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=ChannelKind.choices)
    url_ref = models.CharField(
        "webhook URL reference",
        max_length=300,
        blank=True,
        help_text="env:NAME or file:/path holding the URL (webhooks); never the URL itself",
    )
    url_host = models.CharField(
        max_length=255, blank=True, help_text="The host the URL named when it was saved"
    )
    addresses = ArrayField(models.EmailField(), default=list, blank=True)
    events = models.JSONField(default=list)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        where = self.database.name if self.database_id and self.database else "every database"
        return f"{self.name} ({self.get_kind_display()}, {where})"

    @property
    def is_webhook(self) -> bool:
        return self.kind in WEBHOOKS

    @property
    def event_labels(self) -> list[str]:
        return [events.label(name) for name in self.events]

    def last_delivery(self) -> Outbox | None:
        return self.deliveries.order_by("-created_at", "-pk").first()

    @property
    def target(self) -> str:
        """What the page and the outbox say it goes to (never the URL)."""
        if self.is_webhook:
            return f"{self.url_ref} → {self.url_host}" if self.url_host else self.url_ref
        return ", ".join(self.addresses)


class Preference(models.Model):
    """What a user gets by email. Without a row, the defaults of their role apply."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preference"
    )
    events = models.JSONField(default=list)
    muted = models.ManyToManyField(
        ManagedDatabase, blank=True, related_name="+", help_text="Databases never emailed about"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"notification preferences of {self.user}"


class Outbox(Job):
    """One notification to one recipient (a user's email, or a channel), written in the
    transaction of the event it tells about, and delivered by a job of kind ``notification``."""

    event_id = models.UUIDField(default=uuid.uuid4, db_index=True, help_text="Rows of one event")
    event = models.CharField(max_length=40, help_text="An event name of dashboard/notify/events.py")
    database = models.ForeignKey(
        ManagedDatabase, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    channel = models.ForeignKey(
        Channel, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    address = models.EmailField(blank=True, help_text="A user's email address")
    target = models.CharField(max_length=400, help_text="Where it goes, as the page says it")
    subject = models.CharField(max_length=300)
    body = models.TextField(blank=True)
    url = models.CharField(max_length=1000, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["database", "-created_at"])]

    def __str__(self) -> str:
        return f"notification #{self.pk} ({self.event}) to {self.target}"

    @property
    def event_label(self) -> str:
        return events.label(self.event)

    def last_attempt(self) -> DeliveryAttempt | None:
        if "tries" in getattr(self, "_prefetched_objects_cache", {}):
            return max(self.tries.all(), key=lambda a: a.number, default=None)
        return self.tries.order_by("-number").first()


class DeliveryAttempt(models.Model):
    """One try at delivering an outbox row: when, how long, the HTTP status or the error."""

    outbox = models.ForeignKey(Outbox, on_delete=models.CASCADE, related_name="tries")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    ok = models.BooleanField(default=False)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["outbox", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of notification #{self.outbox_id}"

    @property
    def result(self) -> str:
        parts: list[Any] = []
        if self.status_code is not None:
            parts.append(f"HTTP {self.status_code}")
        if self.error:
            parts.append(self.error)
        return " · ".join(str(p) for p in parts) or ("sent" if self.ok else "")
