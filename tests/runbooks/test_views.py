"""The runs pages: starting with bad input, ticking, deciding, aborting through the browser's
POSTs; a run is only reachable through its own database's URL; user text is escaped; CSRF."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from helpers import CHECKS_THEN_APPROVAL, checked, make_database, make_user
from helpers import runbook as book

from runbooks import engine
from runbooks.models import Approval, Run, RunState, StepState

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(engineer, analyticbot):
    return engine.start_run(engineer, book(CHECKS_THEN_APPROVAL), analyticbot, "0020")


def url(name, run, *rest):
    return reverse(name, args=[run.database.name, run.pk, *rest])


def test_an_engineer_starts_a_production_deployment_to_the_head(client, engineer, analyticbot):
    client.force_login(engineer)
    response = client.post(
        reverse("run-start"),
        {"runbook": "production-deployment", "database": "analyticbot", "target": ""},
    )
    started = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == started.get_absolute_url()
    assert started.target_revision == "0020" and started.started_by == engineer
    risk = started.steps.get(step_id="risk-report")
    assert risk.state == StepState.STARTED and risk.job.state == "queued"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"runbook": "production-deployment", "database": "analyticbot", "target": "zzz"},
            "zzz is not one of the available choices",
        ),
        ({"runbook": "nope", "database": "analyticbot"}, "Select a valid choice"),
        ({"runbook": "production-deployment", "database": "missing"}, "Select a valid choice"),
        (
            {"runbook": "data-corruption-recovery", "database": "analyticbot", "target": "0017"},
            "takes no target",
        ),
        # Started from the run it rolls back (its triggers, or start_rollback), never here.
        ({"runbook": "failed-migration-rollback", "database": "analyticbot"}, "Select a valid"),
    ],
)
def test_bad_starts_say_why_and_create_nothing(client, engineer, analyticbot, data, message):
    client.force_login(engineer)
    response = client.post(reverse("run-start"), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Run.objects.exists()


def test_a_viewer_cannot_start_or_tick(client, viewer, run):
    client.force_login(viewer)
    assert client.post(reverse("run-start"), {"runbook": "x"}).status_code == 403
    assert client.post(url("run-tick", run, "look"), {"note": "x"}).status_code == 403
    assert run.steps.get(step_id="look").state == StepState.OPEN


def test_ticking_records_the_note_escaped(client, engineer, run):
    client.force_login(engineer)
    client.post(url("run-tick", run, "look"), {"note": "<img src=x onerror=alert(1)>"})
    body = client.get(url("run-detail", run)).content.decode()
    assert "<img src=x" not in body and "&lt;img src=x onerror=alert(1)&gt;" in body
    assert run.steps.get(step_id="look").done_by == engineer


def test_a_too_long_note_is_refused_and_nothing_ticks(client, engineer, run):
    client.force_login(engineer)
    response = client.post(url("run-tick", run, "look"), {"note": "x" * 2001}, follow=True)
    assert "The note was refused" in response.content.decode()
    assert run.steps.get(step_id="look").state == StepState.OPEN


def test_an_engineer_cannot_approve_and_a_lead_can(client, engineer, lead, run):
    client.force_login(engineer)
    data = {"decision": "approve", "comment": "fine"}
    assert client.post(url("run-decide", run, "approve"), data).status_code == 403
    client.force_login(lead)
    client.post(url("run-decide", run, "approve"), data)
    assert Approval.objects.get().user == lead


def test_nobody_approves_their_own_run_through_the_browser(client, analyticbot):
    boss = make_user("boss", "lead")
    own = engine.start_run(boss, book(CHECKS_THEN_APPROVAL), analyticbot, "0020")
    client.force_login(boss)
    response = client.post(
        url("run-decide", own, "approve"), {"decision": "approve", "comment": "mine"}, follow=True
    )
    assert "someone else must approve it" in response.content.decode()
    assert not Approval.objects.exists()


def test_a_decision_without_a_comment_records_nothing(client, lead, run):
    client.force_login(lead)
    response = client.post(url("run-decide", run, "approve"), {"decision": "approve"}, follow=True)
    assert "Nothing was recorded" in response.content.decode()
    assert not Approval.objects.exists()


def test_a_rejection_from_the_browser_stops_the_run(client, lead, run):
    client.force_login(lead)
    client.post(url("run-decide", run, "approve"), {"decision": "reject", "comment": "not today"})
    run.refresh_from_db()
    assert run.state == RunState.REJECTED


def test_abort_needs_a_reason(client, engineer, run):
    client.force_login(engineer)
    client.post(url("run-abort", run), {"reason": ""})
    run.refresh_from_db()
    assert run.state == RunState.ACTIVE
    client.post(url("run-abort", run), {"reason": "postponed"})
    run.refresh_from_db()
    assert run.state == RunState.ABORTED


def test_a_run_is_not_reachable_through_another_databases_url(client, engineer, lead, run):
    other = make_database(name="billing")
    checked(other, "0016")
    client.force_login(lead)
    for name, rest in [("run-detail", ()), ("run-report", ("json",))]:
        assert client.get(reverse(name, args=[other.name, run.pk, *rest])).status_code == 404
    response = client.post(
        reverse("run-decide", args=[other.name, run.pk, "approve"]),
        {"decision": "approve", "comment": "x"},
    )
    assert response.status_code == 404 and not Approval.objects.exists()


def test_every_post_needs_the_csrf_token(engineer, run):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(engineer)
    assert strict.post(url("run-tick", run, "look"), {"note": "x"}).status_code == 403
    assert run.steps.get(step_id="look").state == StepState.OPEN


def test_the_runs_page_filters_and_says_what_each_run_waits_for(client, viewer, run, engineer):
    client.force_login(viewer)
    body = client.get(reverse("runs")).content.decode()
    assert f'data-run="{run.pk}"' in body and "a lead to approve" in body
    assert (
        f'data-run="{run.pk}"'
        not in client.get(reverse("runs") + "?state=completed").content.decode()
    )
    assert f'data-run="{run.pk}"' in client.get(reverse("runs") + "?person=erin").content.decode()
    assert (
        f'data-run="{run.pk}"'
        not in client.get(reverse("runs") + "?database=other").content.decode()
    )


def test_the_live_poll_answers_204_until_something_changes(client, viewer, engineer, run):
    from runbooks.views import stamp

    client.force_login(viewer)
    headers = {"HX-Request": "true"}
    unchanged = client.get(url("run-detail", run) + f"?stamp={stamp(run)}", headers=headers)
    assert unchanged.status_code == 204
    engine.tick(engineer, run, run.steps.get(step_id="look"), "")
    changed = client.get(url("run-detail", run) + "?stamp=old", headers=headers)
    assert changed.status_code == 200 and changed["HX-Refresh"] == "true"


def test_a_step_that_ends_while_the_page_renders_still_reloads_it(
    client, viewer, engineer, run, monkeypatch
):
    # Found in loaded browser runs: the page was rendered with a step running, the step ended,
    # then the stamp was taken with it done; every later poll matched and the page never moved.
    import re

    from runbooks import views

    real = views.run_context

    def context_then_the_step_ends(r):
        context = real(r)
        engine.tick(engineer, r, r.steps.get(step_id="look"), "")
        return context

    monkeypatch.setattr(views, "run_context", context_then_the_step_ends)
    client.force_login(viewer)
    page = client.get(url("run-detail", run)).content.decode()
    monkeypatch.undo()
    sent = re.search(r"\?stamp=([0-9a-f]{16})", page).group(1)
    poll = client.get(url("run-detail", run) + f"?stamp={sent}", headers={"HX-Request": "true"})
    assert poll.status_code == 200 and poll["HX-Refresh"] == "true"


@pytest.mark.parametrize("step", ["look", "no-such-step", "not a slug", "é", "x" * 500])
def test_the_live_output_of_an_unknown_step_is_a_404(client, viewer, run, settings, step):
    # Without the NUL middleware too: the view itself refuses what no step id can be.
    settings.MIDDLEWARE = [
        m for m in settings.MIDDLEWARE if not m.endswith("refuse_nul_characters")
    ]
    client.force_login(viewer)
    headers = {"HX-Request": "true"}
    response = client.get(url("run-detail", run), {"step": step}, headers=headers)
    assert response.status_code == (286 if step == "look" else 404)  # 286: not live, stop polling
    nul = client.get(url("run-detail", run) + "?step=%00", headers=headers)
    assert nul.status_code == 404 and "<html" not in nul.content.decode()


def test_reports_download_in_three_formats(client, viewer, run):
    import json

    client.force_login(viewer)
    data = json.loads(b"".join(client.get(url("run-report", run, "json")).streaming_content))
    assert data["meta"]["run"]["target_revision"] == "0020"
    assert [e["action"] for e in data["events"]][0] == "run.started"
    csv_body = b"".join(client.get(url("run-report", run, "csv")).streaming_content).decode()
    assert csv_body.startswith("record,phase,step,") and "\nstep,1. First,look,check," in csv_body
    audit = client.get(url("run-report", run, "audit.csv"))
    assert "run.started" in b"".join(audit.streaming_content).decode()
    pdf = client.get(url("run-report", run, "pdf"))
    assert pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    assert client.get(url("run-report", run, "exe")).status_code == 404


def test_a_run_reports_json_verifies_outside_runway(client, viewer, engineer, run, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    engine.tick(engineer, run, run.steps.get(step_id="look"), "read them")
    client.force_login(viewer)
    export = tmp_path / "run.json"
    export.write_bytes(b"".join(client.get(url("run-report", run, "json")).streaming_content))
    tool = Path(__file__).resolve().parents[2] / "tools" / "verify_audit_export.py"
    ok = subprocess.run([sys.executable, str(tool), str(export)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    export.write_text(export.read_text().replace("read them", "read none"))
    broken = subprocess.run(
        [sys.executable, str(tool), str(export)], capture_output=True, text=True
    )
    assert broken.returncode == 1


def test_the_runs_page_costs_the_same_queries_for_one_run_or_many(
    client, viewer, engineer, analyticbot, django_assert_max_num_queries
):
    for name in ("b1", "b2", "b3", "b4", "b5"):
        other = make_database(name=name)
        checked(other, "0016")
        engine.start_run(engineer, book(CHECKS_THEN_APPROVAL), other, "0020")
    client.force_login(viewer)
    with django_assert_max_num_queries(12):
        body = client.get(reverse("runs")).content.decode()
    assert body.count("data-run=") == 5
