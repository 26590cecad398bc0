"""The backup pages: status, detail, actions, policy; roles, htmx polling, bad input."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from helpers import backup_outcome, make_database, validation_outcome

from dashboard.audit.models import AuditEvent
from dashboard.backups.models import Backup, BackupPolicy, Validation
from dashboard.databases.models import ConnectionCheck

pytestmark = pytest.mark.django_db

CHECKS = [
    {"name": "row count of users", "ok": True, "expected": 200, "found": 200, "detail": ""},
    {"name": "row count of payments", "ok": True, "expected": 340, "found": 340, "detail": ""},
    {
        "name": "orphaned rows: payments.user_id -> users.id",
        "ok": False,
        "expected": 0,
        "found": 3,
        "detail": "3 payments point at missing users",
    },
]


def backup(db, *, hours_ago=1.0, **kwargs):
    taken = timezone.now() - timedelta(hours=hours_ago)
    kwargs.update(backup_outcome(kwargs.pop("state", "completed")))
    kwargs.setdefault("size_bytes", 3_400_000)
    kwargs.setdefault("duration_s", 4.2)
    kwargs.setdefault("created_at", taken)
    kwargs.setdefault("started_at", taken)
    kwargs.setdefault("finished_at", taken + timedelta(seconds=5))
    kwargs.setdefault("sha256", "ab12cd34ef56" + "0" * 52)
    kwargs.setdefault("revision", "0016")
    kwargs.setdefault("row_counts", {"users": 200, "payments": 340})
    kwargs.setdefault("storage_url", f"s3://runway-backups/{db.name}/backup.dump.zst.gpg")
    return Backup.objects.create(database=db, **kwargs)


def validation(of, state="passed", **kwargs):
    ended = state not in ("queued", "running")
    kwargs.setdefault("finished_at", timezone.now() if ended else None)
    kwargs.setdefault("restore_s", 1.8)
    kwargs.setdefault("queries_s", 0.25)
    kwargs.setdefault("checks", CHECKS[:2])
    return Validation.objects.create(backup=of, **validation_outcome(state), **kwargs)


def status_url(db):
    return reverse("backup-status", args=[db.name])


def detail_url(b):
    return reverse("backup-detail", args=[b.database.name, b.pk])


def run_url(db):
    return reverse("backup-run", args=[db.name])


def validate_url(b):
    return reverse("backup-validate", args=[b.database.name, b.pk])


def policy_url(db):
    return reverse("backup-policy", args=[db.name])


# --- the status page ---


def test_the_status_page_shows_the_verdict_history_and_evidence(client, viewer):
    db = make_database()
    good = backup(db, hours_ago=2)
    validation(good)
    failed = backup(db, hours_ago=1, state="failed", size_bytes=None, error="pg_dump exited 1")
    client.force_login(viewer)
    body = client.get(status_url(db)).content.decode()
    assert "Backup policy met" in body
    assert "younger than the RPO (24 hours)" in body  # the rule is explained on the page
    assert f'data-backup="{good.pk}"' in body and f'data-backup="{failed.pk}"' in body
    assert "pg_dump exited 1" in body
    assert "3.2\xa0MB" in body and "4.20 s" in body and "ab12cd34ef56" in body
    assert "restore 1.80 s · queries 0.25 s" in body and "2 checks, all ok" in body
    assert "users 200" in body and "<code>0016</code>" in body
    assert "<svg" in body  # the trend plots


def test_an_unmet_policy_says_why(client, viewer):
    db = make_database()
    backup(db, hours_ago=30)
    client.force_login(viewer)
    body = client.get(status_url(db)).content.decode()
    assert "Backup policy not met" in body
    assert "is 1 day old; the RPO is 24 hours" in body
    assert "was never validated" in body


def test_half_done_backups_are_listed_as_what_they_are_and_never_count(client, viewer):
    db = make_database()
    good = backup(db, hours_ago=30)
    validation(good)
    pruned = backup(db, hours_ago=40, state="pruned")
    interrupted = backup(
        db,
        hours_ago=1,
        state="interrupted",
        size_bytes=None,
        sha256="",
        error="Interrupted: its worker (w1:7) stopped reporting.",
    )
    client.force_login(viewer)
    body = client.get(status_url(db)).content.decode()
    assert "Backup policy not met" in body
    assert f"The newest completed backup (#{good.pk}) is 1 day old" in body
    assert '<span class="badge b-interrupted">interrupted</span>' in body
    assert '<span class="badge b-muted">pruned</span>' in body
    assert '<span class="badge b-ok">completed</span>' in body
    assert body.count("Validate</button>") == 0  # a viewer; and never offered for those two
    detail = client.get(detail_url(interrupted)).content.decode()
    assert '<div class="alert bad">Interrupted: its worker (w1:7)' in detail
    assert "Validate</button>" not in detail
    assert "Pruned" in client.get(detail_url(pruned)).content.decode()


def test_a_database_without_backups_says_so(client, viewer):
    db = make_database()
    client.force_login(viewer)
    body = client.get(status_url(db)).content.decode()
    assert "No completed backup exists." in body and "No backups yet." in body


def test_the_wal_box_warns_when_archiving_is_off(client, viewer):
    db = make_database()
    ConnectionCheck.objects.create(
        database=db,
        state="succeeded",
        finished_at=timezone.now(),
        wal={"wal_level": "replica", "archive_mode": "off", "archiver": {"failed_count": 0}},
    )
    client.force_login(viewer)
    body = client.get(status_url(db)).content.decode()
    assert "WAL archiving is off" in body and "<code>replica</code>" in body


def test_the_status_page_query_count_does_not_grow_with_backups(
    client, viewer, django_assert_num_queries
):
    db = make_database()
    for i in range(40):
        b = backup(db, hours_ago=40 - i)
        validation(b, "passed" if i % 2 else "failed", checks=CHECKS)
    backup(db, hours_ago=0, state="running", progress_bytes=1000)
    client.force_login(viewer)
    # session, user, roles, database, policy, last backup, newest validated, WAL check,
    # active backups, active validations, progress estimate, series, page count, page, validations
    with django_assert_num_queries(15):
        client.get(status_url(db))


def test_the_history_is_paginated(client, viewer):
    db = make_database()
    for i in range(30):
        backup(db, hours_ago=30 - i)
    client.force_login(viewer)
    body = client.get(status_url(db) + "?page=2").content.decode()
    assert "page 2 of 2 · 30 backups" in body
    assert body.count('<tr data-backup="') == 5


# --- the detail page ---


def test_the_detail_page_shows_everything_including_each_check(client, viewer):
    db = make_database()
    b = backup(db)
    validation(b, "failed", checks=CHECKS, error="1 check failed")
    Backup.objects.filter(pk=b.pk).update(facts={"user_count": 200, "plan_count": 3})
    client.force_login(viewer)
    body = client.get(detail_url(b)).content.decode()
    assert "<dt>plan_count</dt><dd>3</dd>" in body
    assert f"Backup #{b.pk} of {db.name}" in body
    assert b.sha256 in body and b.storage_url in body
    assert "orphaned rows: payments.user_id -&gt; users.id" in body
    assert "3 payments point at missing users" in body
    assert "3 integrity checks" in body and "1 failed" in body


def test_the_detail_page_of_a_backup_never_validated_says_so(client, viewer):
    b = backup(make_database())
    client.force_login(viewer)
    assert "Never validated" in client.get(detail_url(b)).content.decode()


def test_a_backup_of_another_database_is_not_reachable_through_this_one(client, engineer):
    mine, theirs = make_database(name="mine"), make_database(name="theirs")
    other = backup(theirs)
    client.force_login(engineer)
    assert client.get(reverse("backup-detail", args=[mine.name, other.pk])).status_code == 404
    response = client.post(reverse("backup-validate", args=[mine.name, other.pk]))
    assert response.status_code == 404
    assert not Validation.objects.exists()


def test_an_unknown_database_is_404(client, viewer):
    client.force_login(viewer)
    assert client.get(reverse("backup-status", args=["nope"])).status_code == 404


# --- htmx: the live fragment ---


def test_an_htmx_request_gets_only_the_fragment_and_keeps_polling_while_a_backup_runs(
    client, viewer
):
    db = make_database()
    backup(db, hours_ago=2, size_bytes=10_000_000)
    backup(
        db,
        hours_ago=0,
        state="running",
        size_bytes=None,
        progress_bytes=2_500_000,
        finished_at=None,
    )
    client.force_login(viewer)
    response = client.get(status_url(db), headers={"HX-Request": "true"})
    body = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in body and body.lstrip().startswith('<div id="backup-activity"')
    assert 'hx-trigger="every 1s"' in body
    assert "2.4\xa0MB</strong> written" in body
    assert '<progress max="10000000" value="2500000"' in body


def test_a_queued_validation_also_keeps_the_fragment_polling(client, viewer):
    db = make_database()
    validation(backup(db), "queued")
    client.force_login(viewer)
    response = client.get(status_url(db), headers={"HX-Request": "true"})
    assert response.status_code == 200 and "waiting for a worker" in response.content.decode()


def test_polling_stops_and_the_page_reloads_when_nothing_is_active(client, viewer):
    db = make_database()
    validation(backup(db))
    client.force_login(viewer)
    response = client.get(status_url(db), headers={"HX-Request": "true"})
    assert response.status_code == 286
    assert response["HX-Refresh"] == "true"
    assert "hx-trigger" not in response.content.decode()


def test_the_full_page_polls_only_while_something_is_active(client, viewer):
    db = make_database()
    b = backup(db)
    client.force_login(viewer)
    assert "hx-trigger" not in client.get(status_url(db)).content.decode()
    validation(b, "running")
    assert 'hx-trigger="every 1s"' in client.get(status_url(db)).content.decode()


# --- roles and methods ---


def all_urls(db, b):
    return [status_url(db), detail_url(b), run_url(db), validate_url(b), policy_url(db)]


def test_anonymous_users_are_sent_to_log_in(client):
    db = make_database()
    b = backup(db)
    for url in all_urls(db, b):
        response = client.post(url) if url in (run_url(db), validate_url(b)) else client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_an_outsider_gets_403_everywhere(client, outsider):
    db = make_database()
    b = backup(db)
    client.force_login(outsider)
    for url in [status_url(db), detail_url(b), policy_url(db)]:
        assert client.get(url).status_code == 403
    for url in [run_url(db), validate_url(b), policy_url(db)]:
        assert client.post(url).status_code == 403


def test_a_viewer_reads_but_cannot_act(client, viewer):
    db = make_database()
    b = backup(db)
    client.force_login(viewer)
    body = client.get(status_url(db)).content.decode()
    assert (
        "Back up now" not in body and "Edit policy" not in body and "Validate</button>" not in body
    )
    assert client.post(run_url(db)).status_code == 403
    assert client.post(validate_url(b)).status_code == 403
    assert client.get(policy_url(db)).status_code == 403
    assert Backup.objects.count() == 1 and not Validation.objects.exists()


def test_an_engineer_sees_the_actions_but_not_the_policy_editor(client, engineer):
    db = make_database()
    backup(db)
    client.force_login(engineer)
    body = client.get(status_url(db)).content.decode()
    assert "Back up now" in body and "Validate</button>" in body and "Edit policy" not in body
    assert client.get(policy_url(db)).status_code == 403
    assert client.post(policy_url(db), policy_data()).status_code == 403
    assert not BackupPolicy.objects.exists()


@pytest.mark.parametrize(
    "name,method",
    [
        ("status", "post"),
        ("detail", "post"),
        ("run", "get"),
        ("validate", "get"),
        ("policy", "put"),
        ("policy", "delete"),
    ],
)
def test_wrong_methods_get_405(client, lead, name, method):
    db = make_database()
    b = backup(db)
    url = {
        "status": status_url(db),
        "detail": detail_url(b),
        "run": run_url(db),
        "validate": validate_url(b),
        "policy": policy_url(db),
    }[name]
    client.force_login(lead)
    assert getattr(client, method)(url).status_code == 405


# --- actions ---


def test_an_engineer_backs_up_on_demand(client, engineer, django_capture_on_commit_callbacks):
    db = make_database()
    client.force_login(engineer)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(run_url(db))
    assert response.status_code == 302 and response["Location"] == status_url(db)
    queued = Backup.objects.get(database=db)
    assert (queued.state, queued.reason, queued.requested_by) == ("queued", "on demand", engineer)
    assert len(callbacks) >= 1  # the task is enqueued once the row is committed


def test_an_engineer_validates_a_completed_backup(client, engineer):
    db = make_database()
    b = backup(db)
    client.force_login(engineer)
    response = client.post(validate_url(b))
    assert response.status_code == 302 and response["Location"] == status_url(db)
    check = Validation.objects.get(backup=b)
    assert (check.state, check.requested_by) == ("queued", engineer)


def test_validating_from_the_detail_page_returns_there(client, engineer):
    b = backup(make_database())
    client.force_login(engineer)
    response = client.post(validate_url(b), {"from": "detail"})
    assert response["Location"] == detail_url(b)


@pytest.mark.parametrize("state", ["queued", "running", "failed", "interrupted", "pruned"])
def test_only_a_completed_backup_can_be_validated(client, engineer, state):
    b = backup(make_database(), state=state)
    client.force_login(engineer)
    response = client.post(validate_url(b), follow=True)
    assert "only a completed backup can be validated" in response.content.decode()
    assert not Validation.objects.exists()


# --- the policy ---


def policy_data(**overrides):
    data = {
        "retention_days": "14",
        "rpo_hours": "12",
        "backup_every_hours": "6",
        "validate_every_hours": "12",
        "storage_url": "s3://runway-backups/analyticbot",
    }
    return data | overrides


def test_a_lead_edits_the_policy_audited_and_scheduled(client, lead):
    db = make_database()
    client.force_login(lead)
    assert client.get(policy_url(db)).status_code == 200
    response = client.post(policy_url(db), policy_data())
    assert response.status_code == 302 and response["Location"] == status_url(db)
    policy = BackupPolicy.objects.get(database=db)
    assert (policy.retention_days, policy.rpo_hours, policy.backup_every_hours) == (14, 12, 6)
    assert policy.storage_url == "s3://runway-backups/analyticbot"
    event = AuditEvent.objects.get(action="backup_policy.updated")
    assert event.actor_id == lead.pk
    assert event.details["changes"]["retention_days"] == [None, 14]
    backup_task = PeriodicTask.objects.get(name=f"runway-backups:backup:{db.pk}")
    assert backup_task.interval.every == 6 and backup_task.enabled


def test_a_second_edit_audits_only_what_changed(client, lead):
    db = make_database()
    BackupPolicy.objects.create(database=db)
    client.force_login(lead)
    client.post(policy_url(db), policy_data(retention_days="30", rpo_hours="24", storage_url=""))
    changes = AuditEvent.objects.get(action="backup_policy.updated").details["changes"]
    assert changes == {"backup_every_hours": [24, 6], "validate_every_hours": [24, 12]}


def test_saving_an_unchanged_policy_writes_no_audit_event(client, lead):
    db = make_database()
    BackupPolicy.objects.create(database=db, **{k: v for k, v in policy_data().items()})
    client.force_login(lead)
    client.post(policy_url(db), policy_data())
    assert not AuditEvent.objects.filter(action="backup_policy.updated").exists()


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("retention_days", "0", "Keep backups for at least 1 day."),
        ("retention_days", "-5", "Keep backups for at least 1 day."),
        ("retention_days", "99999", "less than or equal to 3650"),
        ("retention_days", "ten", "Enter a whole number."),
        ("rpo_hours", "0", "The RPO must be at least 1 hour."),
        ("rpo_hours", "1000000", "less than or equal to 8784"),
        ("backup_every_hours", "-1", "Use 0 to turn scheduled backups off"),
        ("backup_every_hours", "48", "cannot meet an RPO of 12 hours"),
        ("validate_every_hours", "-2", "Use 0 to turn scheduled validation off"),
        ("storage_url", "ftp://host/backups", "Use file:///absolute/path"),
        ("storage_url", "/var/backups", "Use file:///absolute/path"),
        ("storage_url", "file://relative/path", "needs an absolute path"),
        ("storage_url", "s3://Bad_Bucket!/x", "Not a valid S3 bucket name"),
        ("storage_url", "s3://key:secret@bucket/x", "Do not put credentials"),
        ("storage_url", "s3:///prefix-only", "Not a valid S3 bucket name: (none)"),
        ("storage_url", "s3://[bucket", "This is not a URL Runway can read."),  # was a 500
    ],
)
def test_bad_policy_input_is_explained_and_nothing_is_saved(client, lead, field, value, message):
    db = make_database()
    schedules_before = list(PeriodicTask.objects.values("name", "interval_id", "enabled"))
    client.force_login(lead)
    response = client.post(policy_url(db), policy_data(**{field: value}))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not BackupPolicy.objects.exists()
    assert not AuditEvent.objects.filter(action="backup_policy.updated").exists()
    assert list(PeriodicTask.objects.values("name", "interval_id", "enabled")) == schedules_before


def test_a_local_storage_url_and_turning_schedules_off_are_accepted(client, lead):
    db = make_database()
    client.force_login(lead)
    data = policy_data(
        storage_url="file:///var/backups/runway", backup_every_hours="0", validate_every_hours="0"
    )
    assert client.post(policy_url(db), data).status_code == 302
    tasks = PeriodicTask.objects.filter(name__startswith="runway-backups:")
    assert [t.enabled for t in tasks] == [False, False]


# --- the overview badge and the links to the page ---


def test_the_database_page_and_the_history_link_to_backups(client, viewer):
    db = make_database()
    client.force_login(viewer)
    assert status_url(db) in client.get(db.get_absolute_url()).content.decode()
    history = client.get(reverse("schema-history", args=[db.name])).content.decode()
    assert status_url(db) in history


# --- in Chromium ---


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_lead_sees_the_status_at_a_glance_and_live_progress(page, live_server, lead, artifacts):
    db = make_database()
    ConnectionCheck.objects.create(
        database=db,
        state="succeeded",
        finished_at=timezone.now(),
        current_revisions=["0016"],
        wal={
            "wal_level": "replica",
            "archive_mode": "off",
            "archive_command_set": False,
            "archiver": {"archived_count": 0, "failed_count": 0, "last_archived_wal": None},
        },
    )
    for i in range(12):
        b = backup(
            db,
            hours_ago=24 * (12 - i) - 20,
            size_bytes=3_100_000 + i * 45_000 + (i % 3) * 20_000,
            duration_s=3.6 + i * 0.08 + (i % 4) * 0.3,
            requested_by=None,
            reason="scheduled",
        )
        validation(b)
    backup(
        db,
        hours_ago=3,
        state="failed",
        size_bytes=None,
        duration_s=0.4,
        sha256="",
        revision="",
        row_counts={},
        storage_url="",
        error="pg_dump: error: connection to server failed: FATAL: too many connections",
        reason="on demand",
        requested_by=lead,
    )
    running = backup(
        db,
        hours_ago=0.01,
        state="running",
        size_bytes=None,
        duration_s=None,
        finished_at=None,
        sha256="",
        progress_bytes=1_200_000,
        reason="pre-migration",
    )
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "leo")
    page.fill("#id_password", "pw-leo")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}{status_url(db)}")
    assert page.locator("#verdict").inner_text().startswith("✔ Backup policy met")
    assert "WAL archiving is off" in page.locator(".wal").inner_text()
    page.locator(".job", has_text="1.1 MB written").wait_for()

    # The fragment polls: the worker's progress shows without a reload.
    Backup.objects.filter(pk=running.pk).update(progress_bytes=2_300_000)
    page.locator(".job", has_text="2.2 MB written").wait_for(timeout=10_000)
    page.screenshot(path=artifacts / "backups-status.png", full_page=True)

    # Once it completes, polling stops and the page reloads to show the new state.
    Backup.objects.filter(pk=running.pk).update(
        state="succeeded", size_bytes=3_700_000, finished_at=timezone.now(), duration_s=4.1
    )
    page.locator("#verdict", has_text="not met").wait_for(timeout=10_000)
    assert page.locator(".job").count() == 0
    assert "was never validated" in page.locator("#verdict").inner_text()
    page.screenshot(path=artifacts / "backups-status-not-met.png", full_page=True)

    # A backup's own page shows every check of every validation.
    oldest = Backup.objects.filter(database=db).order_by("created_at").first()
    validation(oldest, "failed", checks=CHECKS, error="1 of 3 integrity checks failed")
    page.goto(f"{live_server.url}{detail_url(oldest)}")
    assert (
        "3 payments point at missing users" in page.locator("[data-validation]").first.inner_text()
    )
    page.screenshot(path=artifacts / "backup-detail.png", full_page=True)
