"""In Chromium, three people in their own browser contexts review a high-risk production change:
the inbox and its count bring the lead to the review page, the lead requests changes, the
engineer amends the run's window, two leads approve (the seeded two-lead policy), and the engineer
presses Deploy inside the window: the real worker upgrades the real database. Then an approval
that went stale, and a run whose staging run is missing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from helpers import log_in, make_database, make_user, recorded_backup
from helpers import runbook as book
from playwright.sync_api import expect

from dashboard.lib import pg
from dashboard.lib.secrets import resolve
from runbooks import engine
from runbooks.models import Approval, ApprovalPolicy, Run, RunState, StepState

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

REVIEW_THEN_UPGRADE = """
id: reviewed
title: Reviewed deployment
needs_target: true
phases:
  - id: review
    title: Review
    due: "-1h"
    steps:
      - id: approve
        approval: Two leads approve
        role: lead
  - id: run
    title: Run
    due: "0"
    steps:
      - id: upgrade
        action: schema.upgrade
        title: "Execute: alembic upgrade to the target revision"
"""


def page_of(browser, live_server, username):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    log_in(page, live_server, username)
    return page


def decide(page, button, comment):
    page.locator("#decide textarea[name=comment]").fill(comment)
    page.locator("#decide").get_by_role("button", name=button).click()
    page.wait_for_url("**/runs/*/")


def test_changes_amend_two_leads_and_deploy_inside_the_window(
    browser, live_server, celery_worker, engineer, lead, live_target, seeded_policy, artifacts
):
    make_user("lena", "lead")
    now = timezone.now()
    run = engine.start_run(
        engineer,
        book(REVIEW_THEN_UPGRADE),
        live_target,
        "0020",
        planned_at=now + timedelta(days=2),
        window_start=now + timedelta(days=2),
        window_end=now + timedelta(days=2, hours=1),
    )
    recorded_backup(run)
    assert run.max_grade == "high"

    # The lead's inbox: a count in the navigation, the run on the overview.
    leo = page_of(browser, live_server, "leo")
    expect(leo.locator("#inbox-count")).to_have_text("1")
    item = leo.locator(f"#inbox li[data-run='{run.pk}']")
    expect(item).to_have_attribute("data-inbox", "review")
    leo.screenshot(path=artifacts / "inbox.png", full_page=True)
    item.get_by_role("link").click()
    leo.wait_for_url("**/review/")
    for part in ("#pin", "#policy", "[data-revision='0020']", "#backup", "#conversation"):
        expect(leo.locator(part)).to_be_visible()
    expect(leo.locator("#policy")).to_contain_text("2 approvals")
    expect(leo.locator("#pin")).to_contain_text("0020")
    leo.locator("[data-revision='0020'] details.comment-on").first.locator("summary").click()
    leo.locator("[data-revision='0020'] details.comment-on textarea").first.fill(
        "Could this index be built concurrently?"
    )
    leo.locator("[data-revision='0020'] details.comment-on").first.get_by_role(
        "button", name="Comment"
    ).click()
    expect(leo.locator("[data-revision='0020'] .comment").first).to_contain_text("concurrently")
    leo.screenshot(path=artifacts / "review-page.png", full_page=True)
    decide(leo, "Request changes", "Not in two days: take tonight's quiet window, now to +2 h.")
    expect(leo.locator("#changes-requested")).to_be_visible()
    expect(leo.locator("#inbox-count")).to_have_count(0)

    # The engineer finds it in their inbox and amends the target.
    erin = page_of(browser, live_server, "erin")
    expect(erin.locator(f"#inbox li[data-run='{run.pk}']")).to_have_attribute(
        "data-inbox", "changes"
    )
    erin.goto(f"{live_server.url}{run.get_absolute_url()}review/")
    local = timezone.localtime
    erin.locator("#amend input[name=planned_at]").fill(f"{local(now):%Y-%m-%dT%H:%M}")
    erin.locator("#amend input[name=window_start]").fill(
        f"{local(now - timedelta(minutes=5)):%Y-%m-%dT%H:%M}"
    )
    erin.locator("#amend input[name=window_end]").fill(
        f"{local(now + timedelta(hours=2)):%Y-%m-%dT%H:%M}"
    )
    erin.locator("#amend").get_by_role("button", name="Amend").click()
    erin.wait_for_url("**/runs/*/")
    run.refresh_from_db()
    assert run.target_revision == "0020" and not run.changes_requested
    assert run.window_end is not None and run.window_end < now + timedelta(hours=3)

    # Two leads approve; the first approval alone starts nothing and Deploy is not offered.
    leo.goto(f"{live_server.url}{run.get_absolute_url()}review/")
    decide(leo, "Approve", "0017 to 0020 read; the index finding is on a small table.")
    expect(leo.locator("#waiting")).to_contain_text("(1/2)")
    expect(leo.locator("#deploy")).to_have_count(0)
    lena = page_of(browser, live_server, "lena")
    lena.goto(f"{live_server.url}{run.get_absolute_url()}review/")
    decide(lena, "Approve", "Second pair of eyes: agreed.")
    assert Run.objects.get(pk=run.pk).steps.get(step_id="upgrade").state == StepState.WAITING

    # The engineer deploys inside the window; the worker upgrades the real database.
    erin.goto(f"{live_server.url}{run.get_absolute_url()}")
    expect(erin.locator("#deploy")).to_contain_text("Approved by lena, leo")
    erin.screenshot(path=artifacts / "run-ready-to-deploy.png", full_page=True)
    erin.locator("#deploy").get_by_role("button", name="Deploy").click()
    erin.locator("tr[data-step='upgrade'][data-state='done']").wait_for(timeout=120_000)
    run.refresh_from_db()
    assert run.state == RunState.COMPLETED and run.deployed_by == engineer
    with pg.connect(live_target.dsn, resolve(live_target.password_ref)) as conn:
        assert pg.alembic_revision(conn) == "0020"


def test_a_missing_staging_run_and_an_approval_that_went_stale(
    browser, live_server, engineer, lead, seeded_policy, artifacts
):
    from helpers import checked

    make_user("lena", "lead")
    staging = make_database(name="analyticbot-staging", environment="staging")
    prod = make_database(staging_partner=staging)
    checked(prod, "0016")
    ApprovalPolicy.objects.update(staging_first=True)
    run = engine.start_run(engineer, book(REVIEW_THEN_UPGRADE), prod, "0020")

    leo = page_of(browser, live_server, "leo")
    leo.goto(f"{live_server.url}{run.get_absolute_url()}review/")
    expect(leo.locator("#staging-missing")).to_contain_text(
        "No completed run on the staging partner analyticbot-staging"
    )
    decide(leo, "Approve", "looks fine")
    expect(leo.locator(".messages")).to_contain_text("Not approvable yet")
    assert not Approval.objects.exists()

    Run.objects.create(
        runbook_id="reviewed",
        runbook_title="Reviewed deployment",
        runbook={"phases": []},
        database=staging,
        revisions=run.revisions,
        started_by=engineer,
        state=RunState.COMPLETED,
    )
    leo.goto(f"{live_server.url}{run.get_absolute_url()}review/")
    expect(leo.locator("#policy")).to_contain_text("completed on analyticbot-staging")
    decide(leo, "Approve", "staging ran it")
    lena = page_of(browser, live_server, "lena")
    lena.goto(f"{live_server.url}{run.get_absolute_url()}review/")
    decide(lena, "Approve", "agreed")

    # A day passes without a deployment: Deploy refuses and the run is back in review.
    Approval.objects.update(created_at=timezone.now() - timedelta(hours=25))
    erin = page_of(browser, live_server, "erin")
    erin.goto(f"{live_server.url}{run.get_absolute_url()}")
    erin.locator("#deploy").get_by_role("button", name="Deploy").click()
    expect(erin.locator(".messages")).to_contain_text("it is stale: given 25 h ago")
    expect(erin.locator("#review-open")).to_be_visible()
    expect(erin.locator("#deploy")).to_have_count(0)
    erin.goto(f"{live_server.url}{run.get_absolute_url()}review/")
    expect(erin.locator("#conversation [data-void]").first).to_contain_text("stale")
    erin.screenshot(path=artifacts / "review-stale.png", full_page=True)


def test_the_start_form_offers_the_pending_revisions_of_the_chosen_database(
    browser, live_server, engineer, analyticbot, artifacts
):
    erin = page_of(browser, live_server, "erin")
    erin.goto(f"{live_server.url}/runs/new/")
    expect(erin.locator("#id_runbook")).to_have_value("production-deployment")
    expect(erin.locator("#id_target option")).to_have_count(1)  # no database chosen yet
    erin.locator("#id_database").select_option("analyticbot")
    expect(erin.locator("#id_target option")).to_have_count(5)
    expect(erin.locator("#id_target")).to_have_value("0020")
    expect(erin.locator("#target-field")).to_contain_text("4 pending revisions on analyticbot")
    erin.screenshot(path=artifacts / "start-form.png", full_page=True)
    erin.locator("#id_target").select_option("0019")
    erin.get_by_role("button", name="Start").click()
    erin.wait_for_url("**/runs/*/")
    assert Run.objects.get().target_revision == "0019"
