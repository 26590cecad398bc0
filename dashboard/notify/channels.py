"""Changing where notifications go: channels added, removed, tested; each user's own choices.
Every change is audited in its transaction; a webhook's reference is audited, never its URL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from dashboard.audit.chain import record
from dashboard.databases.models import ManagedDatabase
from dashboard.notify import events, outbox
from dashboard.notify.models import Channel, Outbox, Preference


def _snapshot(channel: Channel) -> dict[str, Any]:
    return {
        "name": channel.name,
        "kind": channel.kind,
        "database": channel.database.name if channel.database else None,
        "url_ref": channel.url_ref,
        "url_host": channel.url_host,
        "addresses": list(channel.addresses),
        "events": list(channel.events),
    }


@transaction.atomic
def add_channel(
    actor: User,
    database: ManagedDatabase | None,
    *,
    name: str,
    kind: str,
    url_ref: str = "",
    url_host: str = "",
    addresses: Iterable[str] = (),
    chosen: Iterable[str] = (),
) -> Channel:
    """A new channel (the form has checked the reference and the URL it holds)."""
    channel = Channel.objects.create(
        database=database,
        name=name.strip(),
        kind=kind,
        url_ref=url_ref,
        url_host=url_host,
        addresses=list(addresses),
        events=[e for e in chosen if e in events.BY_NAME],
        created_by=actor,
    )
    record(actor, "notification.channel_added", channel, details=_snapshot(channel))
    return channel


@transaction.atomic
def remove_channel(actor: User, channel: Channel) -> None:
    details = _snapshot(channel) | {"channel": channel.pk}
    record(actor, "notification.channel_removed", channel, details=details)
    channel.delete()


def try_channel(actor: User, channel: Channel) -> Outbox:
    """Send a test notification to the channel (audited as it is queued)."""
    return outbox.send_test(actor, channel)


@transaction.atomic
def update_preferences(
    actor: User, *, chosen: Iterable[str], muted: Iterable[ManagedDatabase]
) -> Preference:
    """The user's own choices: what they get by email, which databases never."""
    preference = Preference.objects.select_for_update().filter(user=actor).first()
    before = {
        "events": outbox.wanted_events(actor, preference),
        "muted": sorted(d.name for d in preference.muted.all()) if preference else [],
        "defaults": preference is None,
    }
    if preference is None:
        preference = Preference(user=actor)
    preference.events = [e.name for e in events.EVENTS if e.name in set(chosen)]
    preference.updated_at = timezone.now()
    preference.save()
    muted = list(muted)
    preference.muted.set(muted)
    after = {"events": preference.events, "muted": sorted(d.name for d in muted)}
    record(
        actor,
        "notification.preferences_changed",
        actor,
        object_type="user",
        details={"before": before, "after": after},
    )
    return preference
