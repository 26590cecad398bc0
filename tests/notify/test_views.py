"""The two pages: your own notifications (any role), and a database's channels (a lead changes
them, everyone reads them; global channels are an admin's). Every refusal says why and saves
nothing; a webhook's URL is never stored or shown; every change is audited."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from helpers import make_database

from dashboard.audit.models import AuditEvent
from dashboard.notify import events
from dashboard.notify.models import Channel, Outbox, Preference

pytestmark = pytest.mark.django_db

HOOK = "RUNWAY_WEBHOOK_T_VIEWS"
SECRET_PATH = "/services/T000/B000/very-secret-token"


@pytest.fixture
def billing() -> Any:
    return make_database(name="billing", environment="production")


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch, settings: Any) -> str:
    settings.RUNWAY_WEBHOOK_ALLOW_PRIVATE = True
    monkeypatch.setenv(HOOK, f"http://127.0.0.1:9{SECRET_PATH}")
    return f"env:{HOOK}"


def channels_url(db: Any) -> str:
    return reverse("notify-channels", args=[db.name])


def add(client: Any, db: Any, **data: Any) -> Any:
    data.setdefault("name", "#db-ops")
    data.setdefault("kind", "webhook-slack")
    data.setdefault("events", [events.APPROVAL_WAITING, events.STEP_FAILED])
    return client.post(channels_url(db) if db else reverse("notify-global-channels"), data)


# --- Your own notifications ---


def test_a_viewer_sees_their_roles_defaults_and_where_mail_goes(client, viewer, settings):
    settings.EMAIL_HOST = "smtp.example.com"
    client.force_login(viewer)
    response = client.get(reverse("notify-preferences"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "vera@example.com" in page and "role's defaults" in page
    assert 'value="approval.waiting" checked' not in page  # a viewer gets nothing by default


def test_a_lead_starts_from_approvals_and_saves_their_own_choice_audited(client, lead, billing):
    client.force_login(lead)
    page = client.get(reverse("notify-preferences")).content.decode()
    assert 'value="approval.waiting"' in page and "Email is off on this Runway" in page
    response = client.post(
        reverse("notify-preferences"),
        {"events": [events.STEP_FAILED, events.TRIGGER_FIRED], "muted": [billing.pk]},
    )
    assert response.status_code == 302
    saved = Preference.objects.get(user=lead)
    assert saved.events == [events.STEP_FAILED, events.TRIGGER_FIRED]
    assert list(saved.muted.all()) == [billing]
    changed = AuditEvent.objects.get(action="notification.preferences_changed")
    assert changed.actor_name == "leo" and changed.details["before"]["defaults"] is True
    assert changed.details["after"] == {
        "events": ["step.failed", "trigger.fired"],
        "muted": ["billing"],
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"events": ["not.an.event"]}, "Select a valid choice"),
        ({"events": [events.TEST]}, "Select a valid choice"),
        ({"muted": ["999999"]}, "Select a valid choice"),
        ({"muted": ["x"]}, "is not a valid value"),
    ],
)
def test_bad_preferences_say_why_and_save_nothing(client, engineer, data, message):
    client.force_login(engineer)
    response = client.post(reverse("notify-preferences"), data)
    assert response.status_code == 400 and message in response.content.decode()
    assert not Preference.objects.exists()
    assert not AuditEvent.objects.filter(action="notification.preferences_changed").exists()


def test_someone_without_a_role_has_no_notifications_page(client, outsider):
    client.force_login(outsider)
    assert client.get(reverse("notify-preferences")).status_code == 403


def test_the_preferences_page_refuses_other_methods(client, viewer):
    client.force_login(viewer)
    assert client.put(reverse("notify-preferences")).status_code == 405


# --- A database's channels ---


def test_a_lead_adds_a_slack_webhook_by_reference_audited_and_never_sees_the_url(
    client, lead, billing, hook
):
    client.force_login(lead)
    response = add(client, billing, url_ref=hook)
    assert response.status_code == 302 and response["Location"] == channels_url(billing)
    channel = Channel.objects.get()
    assert (channel.database, channel.kind, channel.url_ref) == (billing, "webhook-slack", hook)
    assert channel.url_host == "127.0.0.1" and channel.created_by == lead
    assert channel.events == [events.APPROVAL_WAITING, events.STEP_FAILED]
    added = AuditEvent.objects.get(action="notification.channel_added")
    assert added.details["url_ref"] == hook and SECRET_PATH not in str(added.details)
    page = client.get(channels_url(billing)).content.decode()
    assert hook in page and "→ 127.0.0.1" in page and SECRET_PATH not in page
    assert "An approval is waiting" in page


def test_a_lead_adds_an_email_channel(client, lead, billing):
    client.force_login(lead)
    response = add(client, billing, kind="email", addresses="dba@example.com, ops@example.com")
    assert response.status_code == 302
    assert Channel.objects.get().addresses == ["dba@example.com", "ops@example.com"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"url_ref": ""}, "Give the reference of the webhook&#x27;s URL"),
        ({"url_ref": "garbage"}, "Give a reference, not the URL"),
        ({"url_ref": "env:"}, "After env: comes an environment variable"),
        ({"url_ref": "env:RUNWAY_DB_TEST_TARGET_PASSWORD"}, "must start with RUNWAY_WEBHOOK_"),
        ({"url_ref": "env:RUNWAY_SECRET_KEY"}, "must start with RUNWAY_WEBHOOK_"),
        ({"url_ref": "env:RUNWAY_WEBHOOK_TIMEOUT"}, "one of Runway&#x27;s own settings"),
        ({"url_ref": "file:/etc/shadow"}, "file: references are off"),
        ({"url_ref": "file:/" + "x" * 280}, "file: references are off"),  # no OSError
        ({"url_ref": "env:RUNWAY_WEBHOOK_T_UNSET"}, "is not set on this host"),
        ({"kind": "email", "addresses": ""}, "Give at least one address"),
        ({"kind": "email", "addresses": "dba@example.com, not-an-address"}, "Not an email"),
        ({"events": []}, "Choose at least one event"),
        ({"events": [events.TEST]}, "Select a valid choice"),
        ({"kind": "pager"}, "Select a valid choice"),
        ({"name": ""}, "This field is required"),
    ],
)
def test_bad_channels_say_why_and_save_nothing(client, lead, billing, settings, data, message):
    settings.RUNWAY_SECRETS_DIR = ""  # file: references off (the workers' fixture sets one)
    client.force_login(lead)
    response = add(client, billing, **data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Channel.objects.exists()
    assert not AuditEvent.objects.filter(action="notification.channel_added").exists()


@pytest.mark.parametrize(
    ("held", "message"),
    [
        ("file:///etc/passwd", "file:// is refused"),
        ("gopher://127.0.0.1:6379/_x", "gopher:// is refused"),
        (f"http://169.254.169.254{SECRET_PATH}", "cloud metadata"),
        (f"http://[::ffff:169.254.169.254]{SECRET_PATH}", "cloud metadata"),
        (f"https://user:pw@hooks.example.com{SECRET_PATH}", "carries credentials"),
        ("hunter2", "the reference holds no URL"),
    ],
)
def test_a_reference_holding_a_url_runway_refuses_saves_nothing_and_shows_no_secret(
    client, lead, billing, monkeypatch, held, message
):
    monkeypatch.setenv("RUNWAY_WEBHOOK_T_BAD", held)
    client.force_login(lead)
    response = add(client, billing, url_ref="env:RUNWAY_WEBHOOK_T_BAD")
    page = response.content.decode()
    assert response.status_code == 400 and message in page
    assert SECRET_PATH not in page and "hunter2" not in page and "user:pw" not in page
    assert not Channel.objects.exists()


def test_loopback_is_refused_unless_private_receivers_are_allowed(client, lead, billing, hook):
    from django.conf import settings

    settings.RUNWAY_WEBHOOK_ALLOW_PRIVATE = False
    client.force_login(lead)
    response = add(client, billing, url_ref=hook)
    assert response.status_code == 400
    assert "RUNWAY_WEBHOOK_ALLOW_PRIVATE=1" in response.content.decode()
    assert not Channel.objects.exists()


def test_a_url_typed_as_the_reference_is_not_shown_back(client, lead, billing):
    client.force_login(lead)
    typed = f"https://hooks.slack.com{SECRET_PATH}"
    response = add(client, billing, url_ref=typed)
    page = response.content.decode()
    assert response.status_code == 400 and "Runway never stores a webhook" in page
    assert SECRET_PATH not in page


@pytest.mark.parametrize("who", ["viewer", "engineer"])
def test_below_a_lead_reads_the_channels_but_cannot_add_one(client, request, billing, hook, who):
    Channel.objects.create(
        database=billing, name="#db-ops", kind="webhook-json", url_ref=hook,
        url_host="127.0.0.1", events=[events.STEP_FAILED],
    )  # fmt: skip
    client.force_login(request.getfixturevalue(who))
    page = client.get(channels_url(billing)).content.decode()
    assert "#db-ops" in page and "Add a channel" not in page and "Remove" not in page
    response = add(client, billing, name="#mine", url_ref=hook)
    assert response.status_code == 403 and "needs the lead role" in response.content.decode()
    assert Channel.objects.count() == 1


def test_only_an_admin_changes_the_channels_for_every_database(client, lead, admin_user, hook):
    client.force_login(lead)
    assert client.get(reverse("notify-global-channels")).status_code == 200
    assert add(client, None, url_ref=hook).status_code == 403
    client.force_login(admin_user)
    assert add(client, None, url_ref=hook).status_code == 302
    (channel,) = Channel.objects.all()
    assert channel.database is None
    client.force_login(lead)
    remove = reverse("notify-channel-remove", args=[channel.pk])
    assert client.post(remove).status_code == 403
    assert client.post(reverse("notify-channel-test", args=[channel.pk])).status_code == 403
    assert Channel.objects.exists() and not Outbox.objects.exists()


def test_a_lead_tests_a_channel_and_removes_it_both_audited(client, lead, engineer, billing, hook):
    channel = Channel.objects.create(
        database=billing, name="#db-ops", kind="webhook-json", url_ref=hook,
        events=[events.STEP_FAILED],
    )  # fmt: skip
    client.force_login(engineer)
    assert client.post(reverse("notify-channel-test", args=[channel.pk])).status_code == 403
    assert client.post(reverse("notify-channel-remove", args=[channel.pk])).status_code == 403
    client.force_login(lead)
    response = client.post(reverse("notify-channel-test", args=[channel.pk]))
    assert response.status_code == 302 and response["Location"] == channels_url(billing)
    (row,) = Outbox.objects.all()
    assert (row.event, row.channel, row.state) == (events.TEST, channel, "queued")
    queued = AuditEvent.objects.get(action="notification.queued")
    assert queued.actor_name == "leo" and queued.details["event"] == events.TEST
    page = client.get(channels_url(billing)).content.decode()
    assert "A test notification" in page and "not tried yet" in page
    assert client.post(reverse("notify-channel-remove", args=[channel.pk])).status_code == 302
    assert not Channel.objects.exists()
    removed = AuditEvent.objects.get(action="notification.channel_removed")
    assert removed.details["name"] == "#db-ops" and removed.actor_name == "leo"
    Outbox.objects.get(pk=row.pk)  # the history stays


def test_the_channel_actions_refuse_get(client, lead, billing):
    channel = Channel.objects.create(database=billing, name="x", kind="email", events=[])
    client.force_login(lead)
    assert client.get(reverse("notify-channel-remove", args=[channel.pk])).status_code == 405
    assert client.get(reverse("notify-channel-test", args=[channel.pk])).status_code == 405


def test_an_unknown_database_or_channel_is_404(client, lead):
    client.force_login(lead)
    assert client.get(reverse("notify-channels", args=["nope"])).status_code == 404
    assert client.post(reverse("notify-channel-remove", args=[12345])).status_code == 404


def test_the_page_says_who_gets_email_for_each_event(client, viewer, lead, billing, settings):
    settings.EMAIL_HOST = "smtp.example.com"
    Preference.objects.create(user=lead, events=[events.APPROVAL_WAITING]).muted.add(billing)
    client.force_login(viewer)
    page = client.get(channels_url(billing)).content.decode()
    assert "Email to people" in page
    row = page.split("An approval is waiting</td>")[1].split("</tr>")[0]
    assert "nobody" in row  # the lead muted billing
