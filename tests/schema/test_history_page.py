"""The history page's figures agree with their nouns (1 revision, 1 pending revision)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from helpers import checked, linear, make_database

pytestmark = pytest.mark.django_db


def history(client, user, db):
    client.force_login(user)
    return client.get(reverse("schema-history", args=[db.name])).content.decode()


def test_one_revision_and_one_pending_are_singular(client, viewer, tmp_path):
    db = make_database(script_location=str(linear(tmp_path, 1)))
    checked(db)  # alembic_version empty: the one revision is pending
    body = history(client, viewer, db)
    assert '<div class="k">pending revision</div>' in body
    assert '<div class="k">revision in the scripts</div>' in body


def test_the_demo_history_is_plural(client, viewer):
    db = make_database()
    checked(db, "0016")
    body = history(client, viewer, db)
    assert '<div class="k">pending revisions</div>' in body
    assert '<div class="k">revisions in the scripts</div>' in body
