"""Log-in throttling (django-axes): which address a request comes from, what the audit trail says,
and the page a locked-out client sees.

Axes counts failures per user name and per client address separately (AXES_LOCKOUT_PARAMETERS)
in its own AccessAttempt table. The audit trail must not be floodable by a password guesser, so
it gets at most two events per (user name, address) and lockout window: ``user.login_failed`` on
the window's first failure and ``user.locked_out`` when the lock falls. Failures in between, and
attempts while locked out, are only counted by axes.
"""

from __future__ import annotations

import ipaddress
import math
from datetime import datetime, timedelta
from typing import Any

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Max, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from dashboard.audit.chain import record


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def client_address(request: HttpRequest) -> str | None:
    """The address throttling counts (AXES_CLIENT_IP_CALLABLE).

    ``REMOTE_ADDR``, unless Runway runs behind a TLS proxy (RUNWAY_BEHIND_TLS_PROXY): then the
    entry the nearest RUNWAY_PROXY_COUNT proxies appended to X-Forwarded-For. Entries left of
    those were written by the client, so they are never believed; a request with fewer entries
    did not come through the proxies and counts as the peer that sent it.
    """
    peer = request.META.get("REMOTE_ADDR") or None
    hops = settings.RUNWAY_PROXY_COUNT if settings.RUNWAY_BEHIND_TLS_PROXY else 0
    if hops > 0:
        forwarded = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [h for h in forwarded if h]
        if len(forwarded) >= hops and _is_address(forwarded[-hops]):
            return forwarded[-hops]
    return peer


class AuditedAxesHandler(AxesDatabaseHandler):
    """Axes' database handler, writing the bounded audit events described above."""

    def user_login_failed(
        self, sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any
    ) -> None:
        super().user_login_failed(sender, credentials, request, **kwargs)
        # Axes sets the failure count only when it recorded this failure: an attempt refused
        # while locked out (or from a whitelisted client) leaves it None.
        if request is None or request.axes_failures_since_start is None:
            return
        username = get_client_username(request, credentials)
        address = request.axes_ip_address
        counts = self._failures(request, username, address)
        # Only the user name and the address: never the password that was tried.
        details = {"username": str(username or "")[:150], "address": address}
        if counts["pair"] == 1:
            record(None, "user.login_failed", object_type="user", details={**details, "count": 1})
        if request.axes_locked_out:
            limit = get_failure_limit(request, credentials)
            cool_off = get_cool_off(request) or timedelta(0)
            record(
                None,
                "user.locked_out",
                object_type="user",
                details={
                    **details,
                    "count": request.axes_failures_since_start,
                    "locked": [key for key in ("username", "address") if counts[key] >= limit],
                    "until": (request.axes_attempt_time + cool_off).isoformat(),
                },
            )

    def _failures(self, request: Any, username: str | None, address: str | None) -> dict[str, int]:
        """Failures inside the cool-off window: by this user name, from this address, and by the
        two together (whatever user agents they came with)."""
        by_name, by_address = Q(username=username), Q(ip_address=address)
        totals = AccessAttempt.objects.filter(
            by_name | by_address, attempt_time__gte=get_cool_off_threshold(request)
        ).aggregate(
            by_username=Sum("failures_since_start", filter=by_name),
            by_address=Sum("failures_since_start", filter=by_address),
            by_pair=Sum("failures_since_start", filter=by_name & by_address),
        )
        return {key.removeprefix("by_"): value or 0 for key, value in totals.items()}

    def reset_user_attempts(self, request: Any, credentials: dict[str, Any] | None = None) -> int:
        """A success clears that user name's failures from that address only. Axes would also
        clear every failure from the address, so a guesser holding one account of its own could
        log in with it between guesses at others' and never be locked out."""
        username = get_client_username(request, credentials)
        count, _ = AccessAttempt.objects.filter(
            username=username, ip_address=request.axes_ip_address
        ).delete()
        return count


def locked_until(request: Any, credentials: dict[str, Any] | None = None) -> datetime:
    """When the lock on this request's user name and address lifts, at the latest."""
    cool_off = get_cool_off(request) or timedelta(0)
    limit = get_failure_limit(request, credentials)
    latest = []
    for attempts in AxesProxyHandler.get_implementation().get_user_attempts(request, credentials):
        totals = attempts.aggregate(failures=Sum("failures_since_start"), last=Max("attempt_time"))
        if (totals["failures"] or 0) >= limit:
            latest.append(totals["last"])
    return max(latest, default=request.axes_attempt_time or timezone.now()) + cool_off


def lockout_response(
    request: HttpRequest,
    original_response: HttpResponse | None = None,
    credentials: dict[str, Any] | None = None,
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: a page in Runway's layout, 429, saying when to try again."""
    until = locked_until(request, credentials)
    context = {
        "until": until,
        # Shown to the minute, rounded up: trying at the minute shown never fails.
        "retry_at": (until + timedelta(seconds=59)).replace(second=0, microsecond=0),
        "failure_limit": get_failure_limit(request, credentials),
    }
    response = render(request, "accounts/locked_out.html", context, status=429)
    response["Retry-After"] = str(max(1, math.ceil((until - timezone.now()).total_seconds())))
    return response
