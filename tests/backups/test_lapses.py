"""A missed backup policy is announced once per lapse: to the leads (email) and audited; met
again, the next lapse is announced again; a new database without a backup yet is not late."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from helpers import backup_outcome, make_database, validation_outcome

from dashboard.audit.models import AuditEvent
from dashboard.backups import lapses
from dashboard.backups.models import Backup, BackupPolicy, Validation
from dashboard.backups.tasks import check_backup_policies
from dashboard.notify.models import Outbox

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def email_on(settings):
    settings.RUNWAY_EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.RUNWAY_NOTIFY_QUEUE = "nobody"  # the deliveries themselves: tests/notify


def backed_up(db, hours_ago: float, validated: bool = True) -> Backup:
    taken = timezone.now() - timedelta(hours=hours_ago)
    made = Backup.objects.create(
        database=db,
        created_at=taken,
        started_at=taken,
        finished_at=taken,
        **backup_outcome("completed"),
    )
    if validated:
        Validation.objects.create(backup=made, finished_at=taken, **validation_outcome("passed"))
    return made


def told(db) -> list[Outbox]:
    return list(Outbox.objects.filter(event="backup.policy_missed", database=db))


def test_a_lapse_is_announced_once_and_again_after_the_policy_was_met(lead, engineer):
    db = make_database()
    BackupPolicy.objects.create(database=db, rpo_hours=24)
    backed_up(db, hours_ago=30)

    assert lapses.check() == [db.name]
    (mail,) = told(db)
    assert mail.user == lead  # engineers do not get this one by default
    assert "is 1 day old; the RPO is 24 hours" in mail.body
    event = AuditEvent.objects.get(action="backup.policy_missed")
    assert event.details["reasons"][0].startswith("The newest completed backup")
    assert check_backup_policies() == []  # told already: nothing new
    assert len(told(db)) == 1

    backed_up(db, hours_ago=1)
    assert lapses.check() == [] and BackupPolicy.of(db).missed_since is None
    later = timezone.now() + timedelta(hours=30)
    assert lapses.check(now=later) == [db.name]
    assert len(told(db)) == 2


def test_an_unvalidated_backup_misses_the_policy(lead):
    db = make_database()
    BackupPolicy.objects.create(database=db, rpo_hours=24)
    backed_up(db, hours_ago=1, validated=False)
    assert lapses.check() == [db.name]
    assert "was never validated" in told(db)[0].body


def test_a_new_database_without_a_backup_yet_is_not_late_until_its_rpo_passed(lead):
    db = make_database()
    BackupPolicy.objects.create(database=db, rpo_hours=24)
    assert lapses.check() == []
    db.created_at = timezone.now() - timedelta(hours=25)
    db.save()
    assert lapses.check() == [db.name]
    assert "No completed backup exists." in told(db)[0].body
