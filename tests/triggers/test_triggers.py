"""Rollback triggers, each fired by making its condition real: a health URL served here that
starts failing, a probe query slowed by a real lock, an SQL signal crossing its threshold, rows
deleted behind the snapshot, an execution limit lowered. The ticks run in process here (the
Celery task is a one-line wrapper, run once on the real worker below)."""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import reverse
from helpers import Health, make_database, only, rule_of, wait_until

from dashboard.audit.chain import verify
from dashboard.audit.models import AuditEvent
from dashboard.lib import pg
from dashboard.lib.secrets import resolve
from dashboard.notify.models import Outbox
from dashboard.schema import dataloss
from dashboard.triggers import hooks, rules, watch
from dashboard.triggers.models import Firing, Rule, Sample, Signal, Watch

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def private_urls(settings):
    settings.RUNWAY_WEBHOOK_ALLOW_PRIVATE = True  # the health server runs on 127.0.0.1


@pytest.fixture
def started() -> Iterator[list[tuple]]:
    """The rollback starter the runbook engine registers, recording what it was asked."""
    calls: list[tuple] = []

    class Started:
        pk = 4242

    def start(run_id, reason, *, source, grace_seconds):
        calls.append((run_id, reason, source, grace_seconds))
        return Started()

    before = hooks.rollback_starter()
    hooks.register_rollback(start)
    yield calls
    if before is not None:
        hooks.register_rollback(before)


@pytest.fixture
def health() -> Iterator[Health]:
    served = Health()
    yield served
    served.close()


def ticks_until_fired(rule: Rule, seconds: float = 30, every: float = 0.5) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        watch.tick()
        if Firing.objects.filter(rule=rule).exists():
            return time.monotonic() - started
        time.sleep(every)
    raise AssertionError(f"{rule.name} never fired: {list(rule.samples.values('value', 'note'))}")


def target_sql(db, statement: str) -> None:
    with pg.connect(db.dsn, resolve(db.password_ref)) as conn:
        conn.execute(statement.encode())


def test_the_seed_defaults_are_there_and_need_a_url_or_query_to_run(live_target):
    found = {r.signal: r for r in rules.rules_of(live_target)}
    assert set(found) == set(Signal.values)
    assert (found["execution_time"].threshold, found["execution_time"].action) == (60, "rollback")
    assert (found["data_loss"].threshold, found["data_loss"].grace_seconds) == (0, 0)
    assert (found["health"].threshold, found["health"].enabled) == (50, False)
    assert (found["performance"].threshold, found["custom_sql"].threshold) == (30, 5)
    assert found["rehearsal_ratio"].action == "alert"
    assert len(rules.rules_of(live_target)) == len(Signal.values)  # made once


def test_a_failing_health_url_fires_the_rollback_within_seconds(
    live_target, health, started, engineer, settings
):
    settings.EMAIL_HOST = "127.0.0.1"  # email on: the engineer is told (delivery is notify's,
    settings.RUNWAY_NOTIFY_QUEUE = "nobody"  # tested there: its job goes to no worker here)
    rule = only(live_target, Signal.HEALTH, config={"url": health.url}, window_seconds=3)
    w = watch.start(live_target, 7, run_url="/runs/7/")
    for _ in range(4):
        watch.tick()
    assert not Firing.objects.exists() and watch.value_of(rule, w) == 0

    health.status = 503
    took = ticks_until_fired(rule)
    firing = Firing.objects.get()
    assert firing.value > 50 and firing.outcome == "rollback run #4242 started"
    ((run_id, reason, source, grace),) = started
    assert run_id == 7 and source == f"trigger:{rule.pk} health" and grace == rule.grace_seconds
    assert "Health-check failures above 50% fired on analyticbot for run #7" in reason
    assert took < 6  # a sample every 0.5 s here; the beat samples every 2 s
    event = AuditEvent.objects.get(action="trigger.fired")
    assert event.details["outcome"] == firing.outcome and verify().ok
    (told,) = Outbox.objects.filter(event="trigger.fired")
    assert told.user == engineer and told.database == live_target
    assert Watch.objects.get(pk=w.pk).ended_reason == "rolled back by run #4242"
    watch.tick()
    assert Firing.objects.count() == 1  # once per watch


def test_a_health_url_that_does_not_answer_counts_as_failing(live_target, health, started):
    rule = only(live_target, Signal.HEALTH, config={"url": health.url}, window_seconds=3)
    watch.start(live_target, 8)
    health.close()
    ticks_until_fired(rule)
    assert "no answer" in rule.samples.last().note


def test_a_probe_slowed_by_a_real_lock_fires(live_target, started):
    rule = only(
        live_target,
        Signal.PERFORMANCE,
        config={"query": "SELECT count(*) FROM users"},
        window_seconds=4,
    )
    w = watch.start(live_target, 9)
    assert w.baseline[str(rule.pk)] is not None and w.baseline[str(rule.pk)] < 50
    for _ in range(3):
        watch.tick()
    assert not Firing.objects.exists()

    with pg.connect(live_target.dsn, resolve(live_target.password_ref)) as holder:
        holder.autocommit = False
        holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        ticks_until_fired(rule, seconds=40, every=0.2)
        holder.rollback()
    firing = Firing.objects.get()
    assert firing.value > 30 and firing.rule == rule


def test_an_sql_signal_crossing_its_threshold_fires(live_target, started):
    target_sql(
        live_target,
        "CREATE TABLE auth_attempts (id serial PRIMARY KEY, ok boolean, at timestamptz "
        "DEFAULT now()); INSERT INTO auth_attempts (ok) SELECT true FROM generate_series(1, 100)",
    )
    query = (
        "SELECT 100.0 * count(*) FILTER (WHERE NOT ok) / greatest(count(*), 1) "
        "FROM auth_attempts WHERE at > now() - interval '1 minute'"
    )
    rule = only(live_target, Signal.CUSTOM_SQL, config={"query": query}, window_seconds=2)
    watch.start(live_target, 10)
    for _ in range(3):
        watch.tick()
    assert not Firing.objects.exists()
    target_sql(
        live_target, "INSERT INTO auth_attempts (ok) SELECT false FROM generate_series(1, 20)"
    )
    ticks_until_fired(rule)
    assert Firing.objects.get().value > 5  # the window's mean when it crossed
    assert rule.samples.last().value == pytest.approx(100 * 20 / 120, abs=0.5)


def test_an_sql_signal_runs_read_only(live_target, started):
    rule = only(
        live_target,
        Signal.CUSTOM_SQL,
        config={
            "query": "WITH gone AS (DELETE FROM payments RETURNING 1) SELECT count(*) FROM gone"
        },
    )
    w = watch.start(live_target, 11)
    watch.tick()
    sample = Sample.objects.get(rule=rule)
    assert sample.value is None and "read-only transaction" in sample.note
    with pg.connect(live_target.dsn, resolve(live_target.password_ref)) as conn:
        assert conn.execute("SELECT count(*) FROM payments").fetchone()[0] > 0
    assert w.state == Watch.State.ACTIVE


def test_an_execution_limit_lowered_fires_and_the_rehearsal_ratio_alerts(live_target, started):
    only(live_target, Signal.EXECUTION_TIME, threshold=0.01)  # 0.6 s
    ratio = rule_of(live_target, Signal.REHEARSAL_RATIO)
    ratio.enabled = True
    ratio.save()
    watch.start(live_target, 12, rehearsed_seconds=0.2)
    time.sleep(0.7)
    watch.tick()
    fired = {f.rule.signal: f for f in Firing.objects.all()}
    assert set(fired) == {"execution_time", "rehearsal_ratio"}
    assert fired["rehearsal_ratio"].outcome == "alerted" and len(started) == 1


def test_rows_deleted_behind_the_snapshot_fire_the_data_loss_rule_once_execution_ended(
    live_target, started
):
    rule = only(live_target, Signal.DATA_LOSS)
    snap = dataloss.take(live_target, "before run #13")
    watch.start(live_target, 13, snapshot=snap, revisions=["0017"])
    target_sql(live_target, "DELETE FROM payments WHERE id % 20 = 0")
    watch.tick()
    assert not Sample.objects.filter(rule=rule).exists()  # not before execution ended
    watch.executed(13)
    watch.tick()
    firing = Firing.objects.get()
    assert firing.rule == rule and firing.value > 0 and started[0][3] == 0  # no grace
    assert "payments:" in rule.samples.get().note


def test_the_window_ends_the_watch(live_target, settings, started):
    settings.RUNWAY_TRIGGER_WINDOW_HOURS = 0
    watch.start(live_target, 14)
    watch.executed(14)
    watch.tick()
    assert Watch.objects.get(run_id=14).state == Watch.State.ENDED
    assert Watch.objects.get(run_id=14).ended_reason == "post-deployment window ended"


def test_without_a_rollback_runbook_a_rollback_rule_alerts_and_says_so(live_target):
    hooks._rollback.clear()
    rule = only(live_target, Signal.EXECUTION_TIME, threshold=0)
    watch.start(live_target, 15)
    time.sleep(0.1)
    watch.tick()
    assert Firing.objects.get(rule=rule).outcome == "no rollback runbook is installed: alerted only"


def test_the_celery_task_ticks_on_the_real_worker(live_target, celery_worker, started):
    from dashboard.triggers.tasks import watch_triggers

    rule = only(live_target, Signal.EXECUTION_TIME, threshold=0)
    watch.start(live_target, 16)
    watch_triggers.delay()
    wait_until(lambda: Firing.objects.exists(), "the worker's tick", timeout=60)
    assert Firing.objects.get().rule == rule
    # The worker's process has the runbook engine's starter, which finds no run #16.
    assert Firing.objects.get().outcome == (
        "the rollback could not start: Run matching query does not exist."
    )


# --- The page ---


def form_of(rule: Rule, **values: Any) -> dict[str, Any]:
    data = {
        "enabled": "on",
        "threshold": str(rule.threshold),
        "window_seconds": str(rule.window_seconds),
        "action": rule.action,
        "grace_seconds": str(rule.grace_seconds),
        "url": (rule.config or {}).get("url", ""),
        "query": (rule.config or {}).get("query", ""),
    }
    data.update(values)
    return {f"r{rule.pk}-{k}": v for k, v in data.items() if v is not None}


@pytest.mark.parametrize(
    "signal,values,message",
    [
        ("execution_time", {"threshold": "-1"}, "greater than or equal to 0"),
        ("execution_time", {"threshold": "1e400"}, "Enter a number."),
        ("execution_time", {"window_seconds": "999999"}, "less than or equal to 86400"),
        ("execution_time", {"action": "explode"}, "Select a valid choice"),
        ("health", {"url": "file:///etc/passwd"}, "starts with https:// (or http://)"),
        ("health", {"url": "http://169.254.169.254/latest/meta-data/"}, "cloud metadata"),
        ("health", {"url": "http://user:pw@example.org/"}, "carries credentials"),
        ("health", {"url": ""}, "This rule cannot run without a URL."),
        ("custom_sql", {"query": "DROP TABLE users"}, "A signal query is one SELECT"),
        ("custom_sql", {"query": "SELECT 1\x00"}, "NUL"),
        ("custom_sql", {"query": "x" * 3000}, "at most 2000 characters"),
    ],
)
def test_bad_input_is_answered_clearly_and_nothing_changes(client, lead, signal, values, message):
    db = make_database(environment="staging")
    rule = rule_of(db, signal)
    client.force_login(lead)
    response = client.post(
        reverse("triggers-edit", args=[db.name, rule.pk]), form_of(rule, **values)
    )
    assert response.status_code == 400
    assert message in html.unescape(response.content.decode())
    stored = Rule.objects.get(pk=rule.pk)
    assert (stored.threshold, stored.window_seconds, stored.config) == (
        rule.threshold,
        rule.window_seconds,
        rule.config,
    )
    assert not AuditEvent.objects.filter(action="trigger.rule_changed").exists()


@pytest.mark.parametrize(
    "who,status", [("viewer", 403), ("engineer", 403), ("lead", 302), ("admin_user", 302)]
)
def test_only_a_lead_changes_a_production_databases_rules(request, client, who, status):
    db = make_database()  # production
    rule = rule_of(db, Signal.EXECUTION_TIME)
    client.force_login(request.getfixturevalue(who))
    assert client.get(reverse("triggers", args=[db.name])).status_code == 200
    response = client.post(
        reverse("triggers-edit", args=[db.name, rule.pk]), form_of(rule, threshold="90")
    )
    assert response.status_code == status
    stored = Rule.objects.get(pk=rule.pk)
    assert stored.threshold == (90 if status == 302 else 60)


def test_a_change_is_audited_and_shown_with_the_plot(client, lead, live_target, health):
    rule = only(live_target, Signal.HEALTH, config={"url": health.url}, window_seconds=3)
    watch.start(live_target, 17, run_url="/runs/17/")
    for _ in range(4):
        watch.tick()
    client.force_login(lead)
    response = client.post(
        reverse("triggers-edit", args=[live_target.name, rule.pk]),
        form_of(rule, threshold="40", url=health.url),
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="trigger.rule_changed")
    assert event.actor_name == "leo" and event.details["changes"]["threshold"] == [50.0, 40.0]
    page = html.unescape(client.get(reverse("triggers", args=[live_target.name])).content.decode())
    assert "Watching" in page and "run #17" in page and "<svg" in page
    assert "<code>threshold</code>: 50.0 → 40.0" in page


def test_the_page_in_chromium(live_server, page, lead, live_target, health, artifacts, started):
    from helpers import log_in

    rule = only(live_target, Signal.HEALTH, config={"url": health.url}, window_seconds=3)
    for other in (Signal.EXECUTION_TIME, Signal.DATA_LOSS):
        r = rule_of(live_target, other)
        r.enabled = True
        r.save()
    watch.start(live_target, 18, run_url="/runs/18/")
    for i in range(8):
        health.status = 200 if i < 4 else 500
        watch.tick()
        time.sleep(0.3)
    log_in(page, live_server, "leo")
    page.goto(f"{live_server.url}{reverse('triggers', args=[live_target.name])}")
    assert page.locator(f"tr[data-rule='{rule.pk}'] svg").is_visible()
    page.screenshot(path=artifacts / "triggers.png", full_page=True)
