import pytest
from django.urls import reverse
from django.utils import timezone
from helpers import linear, make_database, two_location_project, write_revision

from dashboard.databases.models import ConnectionCheck


def url(db):
    return reverse("schema-history", args=[db.name])


def checked(db, *current):
    return ConnectionCheck.objects.create(
        database=db, state="succeeded", current_revisions=list(current), finished_at=timezone.now()
    )


def test_it_marks_current_and_pending_revisions(client, viewer):
    db = make_database()
    checked(db, "0016")
    client.force_login(viewer)
    body = client.get(url(db)).content.decode()
    assert 'class="current" data-rev="0016"' in body
    for rev in ("0017", "0018", "0019", "0020"):
        assert f'class="pending" data-rev="{rev}"' in body
    assert "replace cascade deletes with restrict" in body.lower()


def test_it_says_when_the_current_revision_is_not_known_yet(client, viewer):
    db = make_database()
    client.force_login(viewer)
    body = client.get(url(db)).content.decode()
    assert "not been read yet" in body


def test_it_shows_a_merged_history(client, viewer, tmp_path):
    write_revision(tmp_path, "a1", None, "base")
    write_revision(tmp_path, "b1", "a1", "left")
    write_revision(tmp_path, "c1", "a1", "right")
    write_revision(tmp_path, "d1", ("b1", "c1"), "merge left and right")
    db = make_database(script_location=str(tmp_path))
    checked(db, "b1")
    client.force_login(viewer)
    body = client.get(url(db)).content.decode()
    assert 'data-rev="d1"' in body and "merge" in body
    assert 'class="pending" data-rev="c1"' in body and 'class="pending" data-rev="d1"' in body
    assert "drift" not in body.lower()


def test_it_names_drift_when_the_database_is_at_an_unknown_revision(client, viewer, tmp_path):
    linear(tmp_path, 3)
    db = make_database(script_location=str(tmp_path))
    checked(db, "0a1b2c3d")
    client.force_login(viewer)
    body = client.get(url(db)).content.decode()
    assert "0a1b2c3d" in body and "no script defines" in body


def test_it_names_two_heads_as_drift(client, viewer, tmp_path):
    write_revision(tmp_path, "a1", None)
    write_revision(tmp_path, "b1", "a1")
    write_revision(tmp_path, "c1", "a1")
    db = make_database(script_location=str(tmp_path))
    checked(db, "a1")
    client.force_login(viewer)
    assert "2 heads" in client.get(url(db)).content.decode()


def test_a_broken_chain_is_named_and_the_rest_still_shows(client, viewer, tmp_path):
    linear(tmp_path, 4)
    write_revision(tmp_path, "0006", "0005", "orphan", filename="0006_orphan.py")
    write_revision(tmp_path, "0003", "0002", "copy", filename="0003_copy.py")
    db = make_database(script_location=str(tmp_path))
    checked(db, "0002")
    client.force_login(viewer)
    body = client.get(url(db)).content.decode()
    assert "0006_orphan.py" in body and "names a revision that does not exist" in body
    assert "0003_copy.py" in body
    assert 'data-rev="0004"' in body


def test_it_shows_which_revisions_lack_a_downgrade(client, viewer, tmp_path):
    write_revision(tmp_path, "a1", None)
    write_revision(tmp_path, "b1", "a1", downgrade=False)
    db = make_database(script_location=str(tmp_path))
    checked(db, "a1")
    client.force_login(viewer)
    body = client.get(url(db)).content.decode()
    row = body[body.index('data-rev="b1"') :]
    assert "no downgrade" in row[: row.index("</tr>")]


def test_a_script_location_that_vanished_is_explained(client, viewer, tmp_path):
    db = make_database(script_location=str(tmp_path / "gone"))
    client.force_login(viewer)
    response = client.get(url(db))
    assert response.status_code == 200 and "not an Alembic project" in response.content.decode()


def row_of(body: str, rev: str) -> str:
    row = body[body.index(f'data-rev="{rev}"') :]
    return row[: row.index("</tr>")]


def test_it_shows_branch_labels_depends_on_and_where_the_revisions_come_from(
    client, viewer, tmp_path
):
    db = make_database(script_location=str(two_location_project(tmp_path)))
    checked(db, "b100")  # what Alembic leaves: b100 stands for 2b1d, which it depends on
    client.force_login(viewer)
    body = client.get(url(db)).content.decode()
    assert (
        "Versions from <code>app/migrations/versions/</code> and "
        "<code>billing/versions/</code> (version_locations in alembic.ini)" in body
    )
    assert 'data-label="billing"' in row_of(body, "b100")
    assert 'data-label="core"' in row_of(body, "1a0c")
    assert 'data-label="billing"' not in row_of(body, "b200")  # only where it is declared
    depends = row_of(body, "b100")
    assert '<a href="#rev-2b1d" data-depends="2b1d"' in depends
    assert "depends on <code>2b1d</code>" in depends
    assert 'id="rev-2b1d"' in body  # the anchor it leads to
    assert "billing/versions/b100_create_invoices.py" in depends  # which folder, when several
    assert "app/migrations/versions/3c2e_index_channels_by_owner.py" in row_of(body, "3c2e")
    assert 'class="pending" data-rev="3c2e"' in body and 'class="pending" data-rev="b200"' in body
    assert "2 heads, one per branch label: core at 3c2e, billing at b200." in body
    assert "ancestor of" not in body
    assert "in billing/versions/" in depends and ">b100_create_invoices.py<" in depends


def test_a_depends_on_a_label_or_nothing_is_named(client, viewer, tmp_path):
    write_revision(tmp_path, "a1", None, branch_labels="core")
    write_revision(tmp_path, "n1", None, depends_on=("core", "zz9"))
    db = make_database(script_location=str(tmp_path))
    client.force_login(viewer)
    row = row_of(client.get(url(db)).content.decode(), "n1")
    assert '<a href="#rev-a1" data-depends="a1"' in row
    assert "depends on <code>core</code> (a1)" in row
    assert "depends on <code>zz9</code>, which no script defines" in row


def test_a_single_folder_shows_its_versions_folder(client, viewer, tmp_path):
    linear(tmp_path, 2)
    db = make_database(script_location=str(tmp_path))
    client.force_login(viewer)
    body = client.get(url(db)).content.decode()
    assert "Versions from <code>versions/</code></p>" in body
    assert ">0001_step.py<" in row_of(body, "0001")


def test_its_query_count_does_not_grow_with_version_locations(
    client, viewer, tmp_path, django_assert_num_queries
):
    one = make_database(name="one", script_location=str(tmp_path / "one"))
    linear(tmp_path / "one", 5)
    two = make_database(name="two", script_location=str(two_location_project(tmp_path / "two")))
    for db in (one, two):
        checked(db, "0002" if db is one else "2b1d")
    client.force_login(viewer)
    for db in (one, two):
        client.get(url(db))  # warm the scripts and analysis caches
        with django_assert_num_queries(9):  # as many as for one folder before
            assert client.get(url(db)).status_code == 200


@pytest.mark.parametrize(
    "who,status", [("viewer", 200), ("engineer", 200), ("lead", 200), ("outsider", 403)]
)
def test_it_checks_the_role(client, db, request, who, status):
    database = make_database()
    client.force_login(request.getfixturevalue(who))
    assert client.get(url(database)).status_code == status


def test_it_rejects_post(client, viewer):
    db = make_database()
    client.force_login(viewer)
    assert client.post(url(db)).status_code == 405


def test_an_unknown_database_is_404(client, viewer):
    client.force_login(viewer)
    assert client.get(reverse("schema-history", args=["nope"])).status_code == 404


def test_its_query_count_does_not_grow_with_pending_revisions(
    client, viewer, tmp_path, django_assert_num_queries
):
    short = make_database(name="short", script_location=str(tmp_path / "short"))
    linear(tmp_path / "short", 3)
    long = make_database(name="long", script_location=str(tmp_path / "long"))
    linear(tmp_path / "long", 40)
    for db in (short, long):
        checked(db, "0001")
    client.force_login(viewer)
    for db in (short, long):
        client.get(url(db))  # analyses the pending revisions and stores them
        with django_assert_num_queries(9):  # one of them reads every stored analysis
            body = client.get(url(db)).content.decode()
        assert body.count("data-grade=") == (2 if db is short else 39)
