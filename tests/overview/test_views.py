from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from helpers import make_database

from dashboard.backups.models import Backup, Validation
from dashboard.databases.models import ConnectionCheck

URL = reverse("overview")


def checked(db, **kwargs):
    kwargs.setdefault("state", "succeeded")
    kwargs.setdefault("finished_at", timezone.now())
    return ConnectionCheck.objects.create(database=db, **kwargs)


def row_of(body: str, name: str) -> str:
    start = body.index(f'data-db="{name}"')
    return body[start : body.index("</tr>", start)]


def test_it_shows_each_database_with_revision_pending_and_status(client, viewer):
    db = make_database()
    checked(db, current_revisions=["0016"])
    client.force_login(viewer)
    row = row_of(client.get(URL).content.decode(), db.name)
    assert "Production" in row and "0016" in row
    assert "4 pending" in row
    assert "Connected" in row and "just now" in row


def test_a_failed_latest_check_shows_beside_the_last_known_revision(client, viewer):
    db = make_database()
    checked(db, current_revisions=["0016"])
    checked(
        db,
        state="succeeded",
        problem="unreachable",
        message="The database server cannot be reached",
    )
    client.force_login(viewer)
    row = row_of(client.get(URL).content.decode(), db.name)
    assert "0016" in row and "Failed" in row and "cannot be reached" in row


def test_a_database_never_checked_says_so(client, viewer):
    make_database()
    client.force_login(viewer)
    row = row_of(client.get(URL).content.decode(), "analyticbot")
    assert "never checked" in row and "unknown" in row


def test_an_unknown_current_revision_shows_drift(client, viewer):
    db = make_database()
    checked(db, current_revisions=["abc123"])
    client.force_login(viewer)
    assert "drift" in row_of(client.get(URL).content.decode(), db.name)


def test_an_engineer_sees_the_register_button_and_a_viewer_does_not(client, viewer, engineer):
    client.force_login(viewer)
    assert "Register a database" not in client.get(URL).content.decode()
    client.force_login(engineer)
    assert "Register a database" in client.get(URL).content.decode()


@pytest.mark.parametrize(
    "who,status", [("viewer", 200), ("engineer", 200), ("lead", 200), ("outsider", 403)]
)
def test_it_checks_the_role(client, request, who, status):
    client.force_login(request.getfixturevalue(who))
    assert client.get(URL).status_code == status


def test_it_sends_anonymous_users_to_log_in(client, db):
    assert client.get(URL).status_code == 302


def test_it_rejects_post(client, viewer):
    client.force_login(viewer)
    assert client.post(URL).status_code == 405


def test_its_query_count_does_not_grow_with_databases(client, viewer, django_assert_num_queries):
    for i in range(6):
        db = make_database(name=f"db{i}")
        checked(db, current_revisions=["0016"])
    client.force_login(viewer)
    client.get(URL)  # warm the script cache
    # session, user, roles, databases, 2 x checks, backup policies, last backups, validated ones
    with django_assert_num_queries(9):
        client.get(URL)


def test_the_backups_column_shows_policy_met_or_why_not(client, viewer):
    met, stale, never = (make_database(name=n) for n in ("met", "stale", "never"))
    for db, hours in ((met, 2), (stale, 50)):
        b = Backup.objects.create(
            database=db, state="succeeded", started_at=timezone.now() - timedelta(hours=hours)
        )
        Validation.objects.create(
            backup=b, state="succeeded", passed=True, finished_at=timezone.now()
        )
    client.force_login(viewer)
    body = client.get(URL).content.decode()
    assert 'b-ok">policy met' in row_of(body, "met")
    assert 'b-warn">backup 2 days old' in row_of(body, "stale")
    assert 'b-bad">no backup' in row_of(body, "never")
    assert reverse("backup-status", args=["never"]) in row_of(body, "never")
