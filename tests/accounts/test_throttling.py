"""Log-in throttling: a user name and an address are each locked after too many failures, the
lockout page says until when, admins release it, and the audit trail stays small."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from dashboard.accounts.throttling import client_address
from dashboard.audit.chain import verify
from dashboard.audit.models import AuditEvent

LIMIT = 5  # RUNWAY_LOGIN_FAILURE_LIMIT's default


def log_in(client: Client, username: str, password: str, address: str = "10.0.0.1", **extra: Any):
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address, **extra
    )


def fail(client: Client, times: int, username: str = "leo", address: str = "10.0.0.1") -> None:
    for _ in range(times):
        log_in(client, username, "guess", address)


def throttle_events() -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(action__in=["user.login_failed", "user.locked_out"]).order_by(
            "id"
        )
    )


def test_after_the_limit_even_the_right_password_gets_the_lockout_page(client, lead):
    for _ in range(LIMIT - 1):
        assert log_in(client, "leo", "guess").status_code == 200
    assert log_in(client, "leo", "guess").status_code == 429

    response = log_in(client, "leo", "pw-leo")

    assert response.status_code == 429
    assert "accounts/locked_out.html" in [t.name for t in response.templates]
    page = response.content.decode()
    assert "You may try again after" in page and "UTC" in page
    assert "axes_reset_username" in page and "Access attempts" in page
    assert 14 * 60 < int(response["Retry-After"]) <= 15 * 60
    assert not AuditEvent.objects.filter(action="user.logged_in").exists()


def test_a_user_name_is_locked_from_every_address(client, lead):
    for i in range(LIMIT):
        log_in(client, "leo", "guess", f"10.0.1.{i}")

    assert log_in(client, "leo", "pw-leo", "10.0.2.1").status_code == 429


def test_an_address_is_locked_for_every_user_name(lead):
    for i in range(LIMIT):
        log_in(Client(), f"nobody{i}", "guess", "10.0.3.1")

    assert log_in(Client(), "leo", "pw-leo", "10.0.3.1").status_code == 429
    assert log_in(Client(), "leo", "pw-leo", "10.0.3.2").status_code == 302


def test_sixty_failures_write_two_audit_events_and_never_the_password(client, lead):
    for _ in range(60):
        log_in(client, "leo", "guess-Xq7", "10.0.4.1")

    failed, locked = throttle_events()
    assert failed.action == "user.login_failed"
    assert failed.details == {"username": "leo", "address": "10.0.4.1", "count": 1}
    assert locked.action == "user.locked_out"
    assert locked.details["count"] == LIMIT and locked.details["locked"] == ["username", "address"]
    assert locked.details["username"] == "leo" and locked.details["address"] == "10.0.4.1"
    until = datetime.fromisoformat(locked.details["until"])
    assert timedelta(minutes=14) < until - timezone.now() <= timedelta(minutes=15)
    assert "guess-Xq7" not in str(failed.details) + str(locked.details)
    # Axes counted the failures until the lock, and none of the refused attempts after it.
    assert AccessAttempt.objects.get(username="leo").failures_since_start == LIMIT
    assert verify().ok
    call_command("verify_audit")


def test_each_pair_gets_one_failure_event_per_window(lead):
    fail(Client(), 2, "leo", "10.0.5.1")
    fail(Client(), 2, "leo", "10.0.5.2")

    assert [(e.action, e.details["address"]) for e in throttle_events()] == [
        ("user.login_failed", "10.0.5.1"),
        ("user.login_failed", "10.0.5.2"),
    ]


def test_refused_attempts_do_not_move_the_time_the_lock_lifts(client, lead):
    fail(client, LIMIT)
    first = log_in(client, "leo", "pw-leo")
    fail(client, 10)
    again = log_in(client, "leo", "pw-leo")

    assert first.status_code == again.status_code == 429
    assert first.context["until"] == again.context["until"]


def test_the_lock_lifts_after_the_cool_off(client, lead):
    fail(client, LIMIT)
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))

    assert log_in(client, "leo", "pw-leo").status_code == 302


@pytest.mark.parametrize(
    ("command", "args"),
    [("axes_reset_username", ["leo"]), ("axes_reset_ip", ["10.0.0.1"]), ("axes_reset", [])],
)
def test_an_admin_releases_the_lock_with_a_command(client, lead, command, args):
    fail(client, LIMIT)
    assert log_in(client, "leo", "pw-leo").status_code == 429

    call_command(command, *args, stdout=open("/dev/null", "w"))  # noqa: SIM115

    assert log_in(client, "leo", "pw-leo").status_code == 302


def test_an_admin_releases_the_lock_in_the_admin(client, lead, admin_user):
    fail(client, LIMIT)
    attempt = AccessAttempt.objects.get(username="leo")
    admin = Client()
    admin.force_login(admin_user)
    listing = admin.get(reverse("admin:axes_accessattempt_changelist"))
    assert listing.status_code == 200 and "leo" in listing.content.decode()

    admin.post(reverse("admin:axes_accessattempt_delete", args=[attempt.pk]), {"post": "yes"})

    assert log_in(client, "leo", "pw-leo").status_code == 302


def test_a_success_clears_the_failures_of_that_user_name(client, lead):
    fail(client, LIMIT - 1)
    assert log_in(client, "leo", "pw-leo").status_code == 302

    fail(Client(), LIMIT - 1)
    assert log_in(Client(), "leo", "pw-leo").status_code == 302


def test_a_success_never_clears_the_failures_against_other_user_names(lead, engineer):
    """A guesser with an account of its own cannot log in with it between guesses at others'."""
    fail(Client(), LIMIT - 1, "leo", "10.0.6.1")
    assert log_in(Client(), "erin", "pw-erin", "10.0.6.1").status_code == 302

    assert log_in(Client(), "leo", "guess", "10.0.6.1").status_code == 429


def test_the_address_is_remote_addr_unless_behind_a_tls_proxy(settings):
    request = RequestFactory().post(
        "/", REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR="203.0.113.9, 198.51.100.7"
    )
    settings.RUNWAY_BEHIND_TLS_PROXY = False
    assert client_address(request) == "10.1.1.1"

    settings.RUNWAY_BEHIND_TLS_PROXY = True
    assert client_address(request) == "198.51.100.7"  # what the proxy appended
    settings.RUNWAY_PROXY_COUNT = 2
    assert client_address(request) == "203.0.113.9"
    settings.RUNWAY_PROXY_COUNT = 3  # fewer entries than proxies: not through them all
    assert client_address(request) == "10.1.1.1"


def test_behind_a_proxy_a_forged_forwarded_for_does_not_escape_the_lock(settings, lead):
    settings.RUNWAY_BEHIND_TLS_PROXY = True
    settings.SECURE_SSL_REDIRECT = False
    for i in range(LIMIT):
        # The client writes its own X-Forwarded-For; the proxy appends the address it saw.
        log_in(
            Client(), f"nobody{i}", "guess", "10.9.9.9", HTTP_X_FORWARDED_FOR=f"1.1.1.{i}, 10.0.7.1"
        )

    forged = log_in(
        Client(), "leo", "pw-leo", "10.9.9.9", HTTP_X_FORWARDED_FOR="1.1.1.99, 10.0.7.1"
    )
    elsewhere = log_in(Client(), "leo", "pw-leo", "10.9.9.9", HTTP_X_FORWARDED_FOR="10.0.7.2")

    assert forged.status_code == 429
    assert elsewhere.status_code == 302
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"10.0.7.1"}
