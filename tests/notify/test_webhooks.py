"""Webhook references and URLs: where a reference may point, what a URL may be, which addresses
it may reach; every refusal says the rule and never the URL's secret path."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from dashboard.notify import webhooks
from dashboard.notify.webhooks import WebhookRefused


@pytest.fixture
def public_only(settings: Any) -> None:
    settings.DEBUG = False
    settings.RUNWAY_WEBHOOK_ALLOW_PRIVATE = False


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "Give the reference of the webhook's URL"),
        ("   ", "Give the reference of the webhook's URL"),
        ("hooks", "Give a reference, not the URL"),
        ("https://hooks.slack.com/services/T0/B0/s3cr3t", "Give a reference, not the URL"),
        ("env:", "After env: comes an environment variable's name"),
        ("env:1BAD", "After env: comes an environment variable's name"),
        ("file:relative/path", "needs an absolute path"),
        ("env:RUNWAY_DB_TEST_TARGET_PASSWORD", "must start with RUNWAY_WEBHOOK_"),
        ("env:RUNWAY_WEBHOOK_TIMEOUT", "one of Runway's own settings"),
        ("file:/etc/passwd", "file: references are off"),
    ],
)
def test_a_bad_reference_is_refused_naming_the_rule(settings, ref, message):
    settings.RUNWAY_SECRETS_DIR = ""
    with pytest.raises(WebhookRefused, match=message) as refused:
        webhooks.check_reference_form(ref)
    assert "s3cr3t" not in str(refused.value) and "password reference" not in str(refused.value)


def test_a_file_reference_must_lie_in_the_secrets_directory(settings, tmp_path):
    inside = tmp_path / "secrets"
    inside.mkdir()
    (inside / "ops").write_text("http://127.0.0.1:9/hook\n")
    settings.RUNWAY_SECRETS_DIR = str(inside)
    settings.RUNWAY_WEBHOOK_ALLOW_PRIVATE = True
    assert webhooks.resolve_url(f"file:{inside}/ops") == "http://127.0.0.1:9/hook"
    with pytest.raises(WebhookRefused, match="inside the secrets directory"):
        webhooks.check_reference_form(f"file:{tmp_path}/elsewhere")
    (inside / "escape").symlink_to(Path("/etc/hostname"))
    with pytest.raises(WebhookRefused, match="symbolic link"):
        webhooks.resolve_url(f"file:{inside}/escape")


def test_an_unset_variable_says_so(monkeypatch):
    monkeypatch.delenv("RUNWAY_WEBHOOK_NOT_THERE", raising=False)
    with pytest.raises(WebhookRefused, match="RUNWAY_WEBHOOK_NOT_THERE is not set on this host"):
        webhooks.resolve_url("env:RUNWAY_WEBHOOK_NOT_THERE")


def test_a_reference_resolving_to_runways_own_secret_is_refused(settings, monkeypatch):
    monkeypatch.setenv("RUNWAY_WEBHOOK_SNEAKY", settings.SECRET_KEY)
    with pytest.raises(WebhookRefused, match="one of Runway's own secrets"):
        webhooks.resolve_url("env:RUNWAY_WEBHOOK_SNEAKY")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "file:// is refused"),
        ("ftp://files.example.com/x", "ftp:// is refused"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "gopher:// is refused"),
        ("hooks.slack.com/services/x", "the reference holds no URL"),
        ("https://user:pw@hooks.example.com/x", "carries credentials"),
        ("https:///path-only", "names no host"),
        ("http://169.254.169.254/latest/meta-data/", "link-local, cloud metadata"),
        ("http://169.254.10.1:8080/hook", "link-local, cloud metadata"),
        ("http://[fe80::1]/hook", "link-local, cloud metadata"),
        ("http://[::ffff:169.254.169.254]/x", "link-local, cloud metadata"),
        ("http://2852039166/latest/", "link-local, cloud metadata"),  # 169.254.169.254
        ("http://100.100.100.200/latest/", "link-local, cloud metadata"),
        ("http://0.0.0.0:8080/x", "link-local, cloud metadata"),
        ("http://127.0.0.1:8080/hook", "loopback or private address"),
        ("http://[::1]:8080/hook", "loopback or private address"),
        ("http://localhost:8080/hook", "loopback or private address"),
        ("http://10.1.2.3/hook", "loopback or private address"),
        ("http://192.168.0.10/hook", "loopback or private address"),
        ("http://hooks.example.com:99999/x", "a URL Runway can read"),
    ],
)
def test_a_url_is_refused_naming_the_rule_never_its_path(public_only, url, message):
    with pytest.raises(WebhookRefused, match=message) as refused:
        webhooks.check_url(url)
    path = urlsplit(url).path
    assert len(path) < 2 or path not in str(refused.value)


def test_metadata_addresses_are_refused_even_when_private_ones_are_allowed(settings):
    settings.RUNWAY_WEBHOOK_ALLOW_PRIVATE = True
    with pytest.raises(WebhookRefused, match="no webhook may reach it"):
        webhooks.check_url("http://169.254.169.254/latest/meta-data/")
    target = webhooks.check_url("http://127.0.0.1:8080/hooks/abc?x=1")
    assert (target.scheme, target.host, target.port) == ("http", "127.0.0.1", 8080)
    assert target.path == "/hooks/abc?x=1" and target.address == "127.0.0.1"
    assert "abc" not in repr(target)


def test_debug_allows_loopback_for_a_local_receiver(settings):
    settings.DEBUG = True
    settings.RUNWAY_WEBHOOK_ALLOW_PRIVATE = False
    assert webhooks.check_url("http://localhost:9/x").port == 9
