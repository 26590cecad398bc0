"""The history, revision and preflight pages, and accepting a finding: role checks, bad input,
escaping. (The browser flow is in test_risk_browser.py.)"""

from __future__ import annotations

import pytest
from django.urls import reverse
from helpers import checked, make_database

from dashboard.audit.models import AuditEvent
from dashboard.schema.models import RiskAcceptance

pytestmark = pytest.mark.django_db


@pytest.fixture
def db():
    found = make_database()
    checked(found, "0016")
    return found


def accept_url(db, rev="0020"):
    return reverse("schema-accept", args=[db.name, rev])


def test_the_history_grades_only_the_pending_revisions(client, viewer, db):
    client.force_login(viewer)
    body = client.get(reverse("schema-history", args=[db.name])).content.decode()
    assert body.count('data-grade="') == 4
    assert 'data-grade="high"' in body  # no table sizes known: a blocking index counts as large
    assert "highest risk of the pending revisions" in body


def test_the_revision_page_shows_sql_and_findings(client, viewer, db):
    client.force_login(viewer)
    body = client.get(reverse("schema-revision", args=[db.name, "0019"])).content.decode()
    assert "UPDATE users SET email_new = email" in body
    assert 'data-rule="data-migration"' in body
    assert "outside a transaction" in body  # the batches run in an autocommit block
    assert "Accept a finding" not in body  # a viewer sees no form


def test_an_unknown_revision_is_404(client, viewer, db):
    client.force_login(viewer)
    assert client.get(reverse("schema-revision", args=[db.name, "nope"])).status_code == 404
    assert client.get(reverse("schema-revision", args=["other", "0020"])).status_code == 404


def test_a_lead_accepts_a_finding_with_a_comment_and_it_is_audited(client, lead, db):
    client.force_login(lead)
    response = client.post(
        accept_url(db), {"rule": "create-index-blocking", "comment": "runs at 3 am"}
    )
    assert response.status_code == 302
    acceptance = RiskAcceptance.objects.get()
    assert (acceptance.revision, acceptance.rule, acceptance.accepted_by) == (
        "0020",
        "create-index-blocking",
        lead,
    )
    event = AuditEvent.objects.get(action="schema.finding_accepted")
    assert event.details == {
        "revision": "0020",
        "rule": "create-index-blocking",
        "comment": "runs at 3 am",
    }
    body = client.get(reverse("schema-revision", args=[db.name, "0020"])).content.decode()
    assert 'data-accepted="create-index-blocking"' in body
    assert 'id="grade">low risk' in body


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rule": "create-index-blocking", "comment": "   "}, "This field is required"),
        ({"rule": "no-such-rule", "comment": "x"}, "is not an open finding of this revision"),
        ({"rule": "create-index-blocking", "comment": "x" * 2001}, "at most 2000 characters"),
        ({}, "This field is required"),
    ],
)
def test_bad_acceptances_are_refused_and_nothing_is_saved(client, lead, db, data, message):
    client.force_login(lead)
    response = client.post(accept_url(db), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not RiskAcceptance.objects.exists()
    assert not AuditEvent.objects.filter(action="schema.finding_accepted").exists()


def test_accepting_twice_says_who_accepted_first(client, lead, db):
    client.force_login(lead)
    client.post(accept_url(db), {"rule": "create-index-blocking", "comment": "first"})
    second = client.post(accept_url(db), {"rule": "create-index-blocking", "comment": "again"})
    assert second.status_code == 400
    assert RiskAcceptance.objects.count() == 1


def test_an_engineer_cannot_accept(client, engineer, db):
    client.force_login(engineer)
    response = client.post(accept_url(db), {"rule": "create-index-blocking", "comment": "x"})
    assert response.status_code == 403
    assert not RiskAcceptance.objects.exists()


def test_comments_are_rendered_escaped(client, lead, db):
    client.force_login(lead)
    client.post(
        accept_url(db), {"rule": "create-index-blocking", "comment": "<script>alert(1)</script>"}
    )
    body = client.get(reverse("schema-revision", args=[db.name, "0020"])).content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_the_preflight_page_queues_gates_and_refuses_a_rehearsal_with_nothing_known(
    client, engineer
):
    bare = make_database(name="fresh")
    client.force_login(engineer)
    response = client.post(reverse("schema-rehearse", args=[bare.name]), follow=True)
    assert "The current revision of fresh is not known" in response.content.decode()
    assert not bare.rehearsals.exists()
    client.post(reverse("schema-run-gates", args=[bare.name]))
    assert bare.gate_runs.count() == 1
    page = client.get(reverse("schema-preflight", args=[bare.name]))
    assert page.status_code == 200 and "Gates" in page.content.decode()


def test_a_gate_run_of_another_database_is_404(client, viewer, db):
    from dashboard.schema.models import GateRun

    other = make_database(name="other")
    run = GateRun.objects.create(database=other)
    client.force_login(viewer)
    assert client.get(reverse("schema-gate-run", args=[db.name, run.pk])).status_code == 404
    assert client.get(reverse("schema-gate-run", args=[other.name, run.pk])).status_code == 200


def test_the_preflight_page_polls_while_jobs_run_and_never_shows_half_a_rehearsal_as_good(
    client, viewer, db
):
    from django.utils import timezone

    from dashboard.schema.models import GateRun, Rehearsal

    pending = ["0017", "0018", "0019", "0020"]
    run = GateRun.objects.create(database=db, revisions=pending, state="running")
    rehearsed = Rehearsal.objects.create(database=db, revisions=pending, state="queued")
    client.force_login(viewer)
    page = client.get(reverse("schema-preflight", args=[db.name])).content.decode()
    assert 'hx-trigger="every 1s"' in page and "Waiting for the worker" in page
    ran = [{"revision": "0017", "seconds": 0.4, "lock_wait_ms": 0.0, "ok": True, "error": ""}]
    now = timezone.now()
    for job, error in ((run, "Interrupted: its worker stopped."), (rehearsed, "Interrupted.")):
        type(job).objects.filter(pk=job.pk).update(
            state="interrupted", finished_at=now, error=error
        )
    Rehearsal.objects.filter(pk=rehearsed.pk).update(timings=ran)
    live = client.get(reverse("schema-preflight", args=[db.name]), HTTP_HX_REQUEST="true")
    assert live.status_code == 286  # htmx: stop polling, nothing is running any more
    body = live.content.decode()
    assert 'id="gates-verdict">interrupted<' in body
    assert 'class="badge b-interrupted" id="rehearsal-state">interrupted<' in body
    assert "Interrupted: its worker stopped." in body
    history = client.get(reverse("schema-history", args=[db.name])).content.decode()
    assert "rehearsed 0.40 s" not in history  # its timing is not offered as the revision's
