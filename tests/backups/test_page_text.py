"""Numbers on the backup pages agree with their nouns: 1 hour, 1 day."""

from __future__ import annotations

import pytest
from django.urls import reverse
from helpers import backup_outcome, make_database

from dashboard.backups.models import Backup, BackupPolicy

pytestmark = pytest.mark.django_db


def status_page(client, user, db):
    client.force_login(user)
    return client.get(reverse("backup-status", args=[db.name])).content.decode()


def test_one_of_each_is_singular(client, viewer):
    db = make_database()
    BackupPolicy.objects.create(database=db, rpo_hours=1, retention_days=1)
    Backup.objects.create(database=db, **backup_outcome("completed"), revision="0016")
    body = status_page(client, viewer, db)
    assert "RPO 1 hour<" in body and "younger than the RPO (1 hour)" in body
    assert ">1 day</div>" in body
    assert "1 hours" not in body and "1 days" not in body


def test_more_are_plural(client, viewer):
    db = make_database()
    BackupPolicy.objects.create(database=db, rpo_hours=24, retention_days=30)
    Backup.objects.create(database=db, **backup_outcome("completed"), revision="0016")
    body = status_page(client, viewer, db)
    assert "RPO 24 hours<" in body and ">30 days</div>" in body
