"""Connection checks run on the real Celery worker against the real cluster."""

import pytest
from helpers import ROOT, TARGET_ROLE, make_database, wait_until

from dashboard.databases import checks
from dashboard.databases.models import ConnectionCheck
from dashboard.jobs import lifecycle as jobs
from devstack.cluster import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def run_check(db, engineer):
    check = checks.request_check(engineer, db)
    wait_until(lambda: ConnectionCheck.objects.get(pk=check.pk).is_done, "the worker's check")
    return ConnectionCheck.objects.get(pk=check.pk)


def test_a_good_database_reports_its_current_revision(celery_worker, make_target, engineer):
    db = make_database(dsn=make_target())
    check = run_check(db, engineer)
    assert check.outcome == "connected", check.message
    assert check.current_revisions == ["0016"]
    assert check.server_version.startswith("15")
    assert check.latency_ms is not None


def test_a_wrong_password_is_named(celery_worker, make_target, engineer, db_secrets):
    secret = db_secrets / "wrong-pw"
    secret.write_text("not-the-password\n")
    db = make_database(dsn=make_target(), password_ref=f"file:{secret}")
    check = run_check(db, engineer)
    assert (check.outcome, check.problem) == ("failed", "auth_failed")
    assert "refused the user name or password" in check.message
    assert "not-the-password" not in check.message


def test_an_unreachable_host_is_named(celery_worker, engineer):
    db = make_database(dsn=f"host=127.0.0.1 port={free_port()} dbname=x user={TARGET_ROLE}")
    check = run_check(db, engineer)
    assert (check.outcome, check.problem) == ("failed", "unreachable")
    assert "cannot be reached" in check.message


def test_a_malformed_dsn_saved_behind_the_forms_back_is_named(celery_worker, engineer):
    db = make_database(dsn="host=127.0.0.1 dbname")
    check = run_check(db, engineer)
    assert (check.outcome, check.problem) == ("failed", "malformed_dsn")


def test_a_missing_database_is_named(celery_worker, pg_cluster, engineer):
    db = make_database(dsn=f"host=127.0.0.1 port={pg_cluster.port} dbname=nope user={TARGET_ROLE}")
    check = run_check(db, engineer)
    assert (check.outcome, check.problem) == ("failed", "no_database")


def test_a_database_without_alembic_version_is_named(celery_worker, pg_cluster, engineer):
    pg_cluster.create_database("never_stamped", owner=TARGET_ROLE, replace=True)
    db = make_database(
        dsn=f"host=127.0.0.1 port={pg_cluster.port} dbname=never_stamped user={TARGET_ROLE}"
    )
    check = run_check(db, engineer)
    assert (check.outcome, check.problem) == ("failed", "no_alembic_version")
    assert "never stamped" in check.message


def test_an_unset_password_variable_is_named(celery_worker, make_target, engineer):
    db = make_database(dsn=make_target(), password_ref="env:RUNWAY_DB_NO_SUCH_VARIABLE")
    check = run_check(db, engineer)
    assert (check.outcome, check.problem) == ("failed", "secret")
    assert "RUNWAY_DB_NO_SUCH_VARIABLE is not set" in check.message


def test_a_script_location_that_is_not_alembic_is_named(celery_worker, make_target, engineer):
    db = make_database(dsn=make_target(), script_location="templates")
    check = run_check(db, engineer)
    assert (check.outcome, check.problem) == ("failed", "not_alembic_project")


def test_a_script_location_given_as_an_alembic_ini_is_an_alembic_project(
    make_target, engineer, tmp_path
):
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {ROOT / 'migrations_target'}\n")
    db = make_database(dsn=make_target(), script_location=str(ini))
    check = jobs.run("connection_check", checks.request_check(engineer, db).pk)
    assert (
        check is not None and check.outcome == "connected" and check.current_revisions == ["0016"]
    )
    ini.write_text("[alembic]\nscript_location = %(here)s/gone\n")
    check = jobs.run("connection_check", checks.request_check(engineer, db).pk)
    assert check is not None and (check.outcome, check.problem) == ("failed", "not_alembic_project")
    assert check.message == (
        f"Connected, but on the worker {ini} is not an Alembic project: its script_location "
        "gone does not exist."
    )


def test_a_check_runs_once_even_if_delivered_twice(make_target, engineer):
    db = make_database(dsn=make_target())
    check = checks.request_check(engineer, db)
    assert jobs.run("connection_check", check.pk) is not None
    assert jobs.run("connection_check", check.pk) is None  # already claimed and done


def test_a_check_that_finds_pending_revisions_has_them_analysed_on_the_worker(
    celery_worker, make_target, engineer, client, monkeypatch
):
    """The first visit of the history page reads stored grades: the worker analysed the pending
    revisions right after the check that found them (it used to be the page, 4 to 5 s)."""
    from django.urls import reverse

    from dashboard.lib import alembic
    from dashboard.schema.models import RevisionAnalysis

    db = make_database(dsn=make_target())
    check = run_check(db, engineer)
    assert check.outcome == "connected", check.message
    pending = ["0017", "0018", "0019", "0020"]
    wait_until(
        lambda: set(RevisionAnalysis.objects.values_list("revision", flat=True)) >= set(pending),
        "the worker's analysis of 0017-0020",
    )
    rendered: list[str] = []
    real = alembic.render_offline

    def counting(tree, revisions, **kwargs):
        revisions = list(revisions)
        rendered.extend(rev.id for rev in revisions)
        return real(tree, revisions, **kwargs)

    monkeypatch.setattr(alembic, "render_offline", counting)
    client.force_login(engineer)
    page = client.get(reverse("schema-history", args=[db.name])).content.decode()
    assert rendered == []
    for revision in pending:
        assert f'data-rev="{revision}"' in page
    assert 'data-grade="medium"' in page


def test_a_failing_analysis_after_the_check_leaves_the_check_connected(make_target, engineer):
    """A hook that raises is logged; the check stays what it was (run in process)."""
    from dashboard.jobs.models import JobState

    db = make_database(dsn=make_target())
    calls = []

    def broken(check):
        calls.append(check.pk)
        raise RuntimeError("analysis exploded")

    checks.AFTER_CONNECTED.append(broken)
    try:
        check = checks.request_check(engineer, db)
        jobs.run("connection_check", check.pk)
    finally:
        checks.AFTER_CONNECTED.remove(broken)
    check.refresh_from_db()
    assert calls == [check.pk]
    assert check.state == JobState.SUCCEEDED and check.outcome == "connected", check.message
