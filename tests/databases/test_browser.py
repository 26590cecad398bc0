"""In Chromium: an engineer registers a database and watches the worker's connection test land."""

import pytest
from helpers import TARGET_PASSWORD_ENV, log_in

from dashboard.databases.models import ManagedDatabase

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_engineer_registers_a_database_and_sees_the_connection_result(
    page, live_server, celery_worker, make_target, engineer, artifacts
):
    dsn = make_target()
    log_in(page, live_server, "erin")
    page.get_by_role("link", name="Register a database").click()
    page.fill("#id_name", "analyticbot")
    page.select_option("#id_environment", "production")
    page.fill("#id_dsn", dsn.replace("app_owner", "app_owner password=oops"))
    page.fill("#id_password_ref", f"env:{TARGET_PASSWORD_ENV}")
    page.fill("#id_script_location", "migrations_target")
    page.fill("#id_critical_tables", "users, payments")
    page.get_by_role("button", name="Register").click()
    assert page.get_by_text("contains a password").is_visible()
    assert "oops" not in page.input_value("#id_dsn")
    page.screenshot(path=artifacts / "register-error.png", full_page=True)

    page.fill("#id_dsn", dsn)
    page.get_by_role("button", name="Register").click()
    page.wait_for_url(f"{live_server.url}/databases/analyticbot/")
    # The first check was queued on registration; htmx polls until the worker's result lands.
    page.locator(".check .badge", has_text="Connected").wait_for(timeout=20_000)
    assert "0016" in page.locator(".check").inner_text()

    with page.expect_response(lambda r: "test-connection" in r.url):
        page.get_by_role("button", name="Test connection").click()
    page.locator(".check .badge", has_text="Connected").wait_for(timeout=20_000)
    checks = ManagedDatabase.objects.get(name="analyticbot").checks.all()
    assert [c.outcome for c in checks] == ["connected", "connected"]
    page.screenshot(path=artifacts / "database-detail.png", full_page=True)


def test_a_lead_sees_an_unconfirmed_password_and_confirms_where_it_goes(
    page, live_server, celery_worker, make_target, lead, artifacts
):
    from helpers import make_database

    db = make_database(name="billing", environment="staging", dsn=make_target(), bound=False)
    log_in(page, live_server, "leo")
    page.goto(f"{live_server.url}/databases/billing/")
    assert page.get_by_text("not confirmed").is_visible()
    assert page.get_by_text("sends this password nowhere").is_visible()
    page.screenshot(path=artifacts / "database-unconfirmed-password.png", full_page=True)
    page.get_by_role("button", name="Confirm: send the password there").click()
    page.locator(".check .badge", has_text="Connected").wait_for(timeout=20_000)
    assert page.get_by_text(f"{db.target} only").is_visible()
    page.screenshot(path=artifacts / "database-confirmed-password.png", full_page=True)


def test_a_lead_chooses_how_the_revisions_run_and_the_page_shows_it(
    page, live_server, lead, settings, artifacts
):
    import sys

    from helpers import make_database

    settings.RUNWAY_PROJECT_PYTHONS = [sys.executable, "/opt/other-app/.venv/bin/python"]
    make_database(name="billing", environment="staging")
    log_in(page, live_server, "leo")
    page.goto(f"{live_server.url}/databases/billing/")
    assert "Runway's environment" in page.locator("#run-mode").inner_text()
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("The project's own env.py").check()
    options = page.locator("#id_project_python option").all_inner_texts()
    assert options == ["—", sys.executable, "/opt/other-app/.venv/bin/python"]
    page.select_option("#id_project_python", sys.executable)
    page.screenshot(path=artifacts / "database-run-mode-form.png", full_page=True)
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"{live_server.url}/databases/billing/")
    shown = page.locator("#run-mode").inner_text()
    assert "The project's own env.py" in shown and sys.executable in shown
    assert "migrations_target/alembic.ini" in shown and "$DATABASE_URL" in shown
    page.locator("#run-mode").scroll_into_view_if_needed()
    page.screenshot(path=artifacts / "database-run-mode.png", full_page=True)
    db = ManagedDatabase.objects.get(name="billing")
    assert (db.run_mode, db.project_python) == ("project", sys.executable)
