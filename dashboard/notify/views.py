from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import Prefetch, Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from dashboard.accounts.refusals import role_refusal
from dashboard.accounts.roles import Request, Role, has_role, role_of, role_required
from dashboard.databases.models import ManagedDatabase
from dashboard.notify import channels, events, outbox
from dashboard.notify.forms import ChannelForm, PreferenceForm
from dashboard.notify.models import Channel, DeliveryAttempt, Outbox

RECENT = 20


@require_http_methods(["GET", "POST"])
@role_required(Role.VIEWER)
def preferences(request: Request) -> HttpResponse:
    user = request.user
    preference = getattr(user, "notification_preference", None)
    initial = {
        "events": outbox.wanted_events(user, preference),
        "muted": list(preference.muted.all()) if preference else [],
    }
    form = PreferenceForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        channels.update_preferences(user, chosen=data["events"], muted=data["muted"])
        messages.success(request, "Saved your notification preferences.")
        return redirect("notify-preferences")
    context = {
        "form": form,
        "defaults": [events.label(e) for e in events.defaults_for(role_of(user))],
        "using_defaults": preference is None,
        "email_enabled": outbox.email_enabled(),
    }
    status = 400 if form.errors else 200
    return render(request, "notify/preferences.html", context, status=status)


def _page(request: Request, db: ManagedDatabase | None, form: ChannelForm) -> HttpResponse:
    where = Q(database=db) if db is not None else Q(database=None)
    attempts = DeliveryAttempt.objects.order_by("number")
    recent = (
        Outbox.objects.filter(database=db)
        .select_related("channel")
        .prefetch_related(Prefetch("tries", queryset=attempts))
        .order_by("-created_at", "-pk")[:RECENT]
    )
    context: dict[str, Any] = {
        "db": db,
        "form": form,
        "channels": Channel.objects.filter(where).select_related("created_by"),
        "global_channels": Channel.objects.filter(database=None) if db is not None else [],
        "recent": recent,
        "may_change": has_role(request.user, Role.LEAD if db is not None else Role.ADMIN),
        "email_enabled": outbox.email_enabled(),
        "emailed": [(e.label, outbox.email_recipients(e.name, db)) for e in events.EVENTS],
        "nav": "overview" if db is not None else "",
    }
    return render(request, "notify/channels.html", context, status=400 if form.errors else 200)


def _add(request: Request, db: ManagedDatabase | None) -> HttpResponse:
    form = ChannelForm(request.POST or None)
    if request.method == "POST":
        needed = Role.LEAD if db is not None else Role.ADMIN
        if not has_role(request.user, needed):
            return role_refusal(request, needed)
        if form.is_valid():
            data = form.cleaned_data
            channel = channels.add_channel(
                request.user,
                db,
                name=data["name"],
                kind=data["kind"],
                url_ref=data["url_ref"] if form.url else "",
                url_host=form.url.host if form.url else "",
                addresses=data["addresses"] if not form.url else [],
                chosen=data["events"],
            )
            messages.success(request, f"Added the channel {channel.name}.")
            return redirect(request.path)
    return _page(request, db, form)


@require_http_methods(["GET", "POST"])
@role_required(Role.VIEWER)
def database_channels(request: Request, name: str) -> HttpResponse:
    return _add(request, get_object_or_404(ManagedDatabase, name=name))


@require_http_methods(["GET", "POST"])
@role_required(Role.VIEWER)
def global_channels(request: Request) -> HttpResponse:
    return _add(request, None)


def _channel(request: Request, channel_id: int) -> tuple[Channel, HttpResponse | None]:
    """The channel, and a refusal unless the user may change it (a lead for a database's
    channel, an admin for a global one)."""
    channel = get_object_or_404(Channel.objects.select_related("database"), pk=channel_id)
    needed = Role.LEAD if channel.database is not None else Role.ADMIN
    refused = None if has_role(request.user, needed) else role_refusal(request, needed)
    return channel, refused


def _back(channel: Channel) -> HttpResponse:
    if channel.database is not None:
        return redirect("notify-channels", channel.database.name)
    return redirect("notify-global-channels")


@require_POST
@role_required(Role.LEAD)
def remove_channel(request: Request, channel_id: int) -> HttpResponse:
    channel, refused = _channel(request, channel_id)
    if refused:
        return refused
    back = _back(channel)
    channels.remove_channel(request.user, channel)
    messages.success(request, f"Removed the channel {channel.name}.")
    return back


@require_POST
@role_required(Role.LEAD)
def try_channel(request: Request, channel_id: int) -> HttpResponse:
    channel, refused = _channel(request, channel_id)
    if refused:
        return refused
    row = channels.try_channel(request.user, channel)
    messages.success(request, f"Test notification #{row.pk} queued for {channel.name}.")
    return _back(channel)
