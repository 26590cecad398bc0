"""schema/freshness.py: whether a gate run or a rehearsal is current, and why not, in words; the
preflight, gate run and rehearsal pages say it, and a gate run a runbook ran links to its run."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone
from helpers import checked, drain, make_database, runbook

from dashboard.backups.models import Backup, Validation
from dashboard.schema.analysis import Pending, pending_of
from dashboard.schema.freshness import freshness
from dashboard.schema.models import GateRun, Rehearsal
from runbooks import engine

pytestmark = pytest.mark.django_db

PENDING = ["0017", "0018", "0019", "0020"]


def ago(minutes: float) -> Any:
    return timezone.now() - timedelta(minutes=minutes)


def gate_run(db: Any, minutes: float, revisions: list[str] | None = None, **fields: Any) -> Any:
    fields.setdefault("state", "succeeded")
    fields.setdefault("verdict", "fail")
    return GateRun.objects.create(
        database=db,
        revisions=PENDING if revisions is None else revisions,
        requested_at=ago(minutes + 1),
        started_at=ago(minutes + 1),
        finished_at=ago(minutes) if fields["state"] != "running" else None,
        **fields,
    )


def rehearsal(db: Any, minutes: float, state: str = "succeeded", **fields: Any) -> Any:
    fields.setdefault("revisions", PENDING)
    fields.setdefault("from_revisions", ["0016"])
    return Rehearsal.objects.create(
        database=db,
        to_revision="0020",
        state=state,
        requested_at=ago(minutes + 1),
        started_at=ago(minutes + 1),
        finished_at=ago(minutes) if state not in ("queued", "running") else None,
        **fields,
    )


@pytest.fixture
def db() -> Any:
    found = make_database()
    checked(found, "0016")
    return found


def test_the_newest_of_each_for_the_pending_revisions_is_current(db):
    run, rehearsed = gate_run(db, 5), rehearsal(db, 10)
    pending = pending_of(db)
    assert pending.revisions == PENDING
    assert freshness(run, pending).current
    assert freshness(rehearsed, pending).current
    assert freshness(run, pending).label == "current" and freshness(run, pending).why == ""


def test_a_gate_run_is_out_of_date_once_a_rehearsal_finished_after_it(db):
    """The issue's case: the gates failed for want of a rehearsal, and one passed since."""
    run = gate_run(db, 10)
    newer = rehearsal(db, 2)
    fresh = freshness(run, pending_of(db))
    assert not fresh.current and fresh.label == "out of date"
    assert fresh.reasons == (
        f"rehearsal #{newer.pk} (succeeded) finished after these gates ran, so their rehearsal "
        "gate is not what it would say now",
    )
    assert freshness(newer, pending_of(db)).current


def test_a_gate_run_is_out_of_date_once_a_backup_validation_finished_after_it(db):
    run = gate_run(db, 10)
    backup = Backup.objects.create(database=db, state="succeeded", revision="0016")
    Validation.objects.create(backup=backup, state="succeeded", passed=True, finished_at=ago(1))
    (reason,) = freshness(run, pending_of(db)).reasons
    assert reason.startswith(f"a restore validation of backup #{backup.pk} finished after")


def test_an_older_gate_run_is_out_of_date_when_a_newer_one_finished(db):
    older, newer = gate_run(db, 30), gate_run(db, 3, verdict="pass")
    pending = pending_of(db)
    assert freshness(older, pending).reasons[0].startswith(f"gate run #{newer.pk} is newer (pass")
    assert freshness(newer, pending).current


def test_a_newer_run_still_running_does_not_supersede(db):
    done = gate_run(db, 30)
    gate_run(db, 0, state="running", verdict="")
    assert freshness(done, pending_of(db)).current


def test_other_pending_revisions_make_either_out_of_date(db):
    run = gate_run(db, 5, revisions=["0017"])
    rehearsed = rehearsal(db, 10, revisions=["0017"])
    pending = pending_of(db)
    assert freshness(run, pending).reasons == (
        "it ran for 0017; pending now: 0017, 0018, 0019, 0020",
    )
    assert (
        "it ran for 0017; pending now: 0017, 0018, 0019, 0020"
        in freshness(rehearsed, pending).reasons
    )


def test_a_rehearsal_from_another_database_revision_is_out_of_date(db):
    rehearsed = rehearsal(db, 10)
    moved = Pending(True, current=["0018"], revisions=["0019", "0020"], target="0020")
    reasons = freshness(rehearsed, moved).reasons
    assert "the database was at 0016 when it was requested; it is at 0018 now" in reasons


def test_a_newer_failed_rehearsal_supersedes_an_older_success(db):
    """As the rehearsal gate judges: an older success does not outweigh a newer end."""
    good = rehearsal(db, 30)
    bad = rehearsal(db, 5, state="failed", error="0019 failed")
    pending = pending_of(db)
    assert freshness(good, pending).reasons[0].startswith(f"rehearsal #{bad.pk} is newer (failed")
    assert freshness(bad, pending).current


def test_nothing_is_current_when_the_database_revision_is_unknown():
    db = make_database()  # no successful check: alembic_version never read
    run, rehearsed = gate_run(db, 5), rehearsal(db, 10)
    pending = pending_of(db)
    assert not pending.known
    for result in (run, rehearsed):
        fresh = freshness(result, pending)
        assert not fresh.current
        assert fresh.reasons[0].startswith("the database's current revision is not known")


def test_an_unfinished_result_is_not_judged(db):
    running = rehearsal(db, 0, state="running", revisions=["0017"])
    assert freshness(running, pending_of(db)).current


# --- The pages ---

GATES_ONLY = """
id: gates-only
title: Gates only
needs_target: true
phases:
  - id: check
    title: Check
    steps:
      - id: gates
        action: gates.preflight
        title: Run the pre-migration gates
"""


def page(client, user, db, name="schema-preflight", *args):
    client.force_login(user)
    response = client.get(reverse(name, args=[db.name, *args]))
    assert response.status_code == 200
    return response.content.decode()


def card(body, title):
    start = body.index(f'<h2 style="margin-top:0">{title}')
    end = body.find('<div class="card', start + 1)
    return body[start : end if end > 0 else len(body)]


def row(body, attr, pk):
    start = body.index(f'data-{attr}="{pk}"')
    return body[start : body.index("</tr>", start)]


def test_a_failed_gate_run_older_than_a_passed_rehearsal_is_out_of_date(client, viewer, db):
    """The issue: the page showed the older failed gate run without saying it was stale."""
    run = gate_run(db, 10)
    newer = rehearsal(db, 2)
    body = page(client, viewer, db)
    gates = card(body, "Gates")
    assert 'data-freshness="out-of-date"' in gates and ">out of date</span>" in gates
    assert (
        f"<strong>Out of date:</strong> rehearsal #{newer.pk} (succeeded) finished after these "
        "gates ran, so their rehearsal gate is not what it would say now."
    ) in gates
    assert "Run the gates again for a current answer." in gates
    rehearsed = card(body, "Rehearsal")
    assert 'data-freshness="current">current</span>' in rehearsed
    assert 'data-freshness="out-of-date"' not in rehearsed
    assert "Out of date" not in rehearsed
    assert f"Run #{run.pk}" in gates
    assert "Recent results" not in body  # one of each: the cards say it all


def test_the_recent_results_mark_each_one(client, viewer, db):
    old_run, new_run = gate_run(db, 60), gate_run(db, 1, verdict="pass")
    good, bad = rehearsal(db, 30), rehearsal(db, 20, state="failed", revisions=["0017"])
    body = page(client, viewer, db)
    assert "Recent results" in body
    older = row(body, "gate-run", old_run.pk)
    assert 'data-freshness="out-of-date"' in older
    assert f"Gate run #{new_run.pk} is newer (pass" in older
    assert 'data-freshness="current"' in row(body, "gate-run", new_run.pk)
    assert f"Rehearsal #{bad.pk} is newer (failed" in row(body, "rehearsal", good.pk)
    failed = row(body, "rehearsal", bad.pk)
    assert "It ran for 0017; pending now: 0017, 0018, 0019, 0020" in failed
    # The newest rehearsal's own card says the same, in a sentence.
    assert "<strong>Out of date:</strong> it ran for 0017" in card(body, "Rehearsal")


def test_an_unfinished_result_gets_no_verdict_on_its_freshness(client, viewer, db):
    gate_run(db, 30)
    running = gate_run(db, 0, state="running", verdict="")
    body = page(client, viewer, db)
    assert "data-freshness" not in card(body, "Gates").split("</h2>")[0]
    assert 'data-freshness="unfinished"' in row(body, "gate-run", running.pk)


def test_the_gate_run_and_rehearsal_pages_say_it_too(client, viewer, db):
    run = gate_run(db, 10, revisions=["0017"])
    rehearsed = rehearsal(db, 5)
    detail = page(client, viewer, db, "schema-gate-run", run.pk)
    assert 'data-freshness="out-of-date"' in detail
    assert "it ran for 0017; pending now: 0017, 0018, 0019, 0020" in detail
    assert f"rehearsal #{rehearsed.pk} (succeeded) finished after these gates ran" in detail
    detail = page(client, viewer, db, "schema-rehearsal", rehearsed.pk)
    assert 'data-freshness="current"' in detail


def test_the_live_part_carries_the_freshness_while_it_polls(client, viewer, db):
    gate_run(db, 10)
    rehearsal(db, 0, state="running")
    client.force_login(viewer)
    response = client.get(reverse("schema-preflight", args=[db.name]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200  # still polling: the rehearsal runs
    assert 'data-freshness="current"' in response.content.decode()


def test_a_gate_run_of_a_runbook_run_links_to_its_run(client, engineer, db):
    run = engine.start_run(engineer, runbook(GATES_ONLY), db, "0020")
    drain(run)
    step = run.steps.get(step_id="gates")
    gate_run_id = step.jobs.get().evidence["gate_run"]
    body = page(client, engineer, db)
    link = reverse("run-detail", args=[db.name, run.pk])
    gates = card(body, "Gates")
    assert f'in <a href="{link}" data-origin-run="{run.pk}">run #{run.pk}</a>' in gates
    assert "(Run the pre-migration gates)" in gates
    assert f"Run #{gate_run_id}" in gates
    detail = page(client, engineer, db, "schema-gate-run", gate_run_id)
    assert f'data-origin-run="{run.pk}"' in detail
    assert "Out of date" not in gates  # it ran for what is pending, and nothing newer exists
    # Gates run from the page have no run.
    GateRun.objects.create(database=db, revisions=PENDING, state="succeeded", verdict="pass")
    body = page(client, engineer, db)
    assert re.search(rf'data-gate-run="{gate_run_id}".*?data-origin-run="{run.pk}"', body, re.S)
    assert "data-origin-run" not in card(body, "Gates")


@pytest.mark.parametrize(
    "who,status", [("viewer", 200), ("engineer", 200), ("lead", 200), ("outsider", 403)]
)
def test_the_pages_check_the_role(client, request, db, who, status):
    run, rehearsed = gate_run(db, 10), rehearsal(db, 5)
    client.force_login(request.getfixturevalue(who))
    for name, args in (
        ("schema-preflight", []),
        ("schema-gate-run", [run.pk]),
        ("schema-rehearsal", [rehearsed.pk]),
    ):
        assert client.get(reverse(name, args=[db.name, *args])).status_code == status
