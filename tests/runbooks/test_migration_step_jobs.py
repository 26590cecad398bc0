"""runbooks 0002: each action step that ran becomes a step plus one job row, and back."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone
from helpers import make_database, make_user, migrate_to, migrate_to_latest

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("runbooks", "0001_initial")]
AFTER = [("runbooks", "0002_step_jobs")]


@pytest.fixture(autouse=True)
def latest_after():
    """The later migrations this test unapplies are applied again after it."""
    yield
    migrate_to_latest()


def migrate(to: list[tuple[str, str]]) -> Any:
    return migrate_to(to)


def test_action_steps_become_steps_with_one_job_and_back() -> None:
    db = make_database()
    erin = make_user("erin", "engineer")
    old = migrate(BEFORE)
    try:
        Run = old.get_model("runbooks", "Run")
        StepRun = old.get_model("runbooks", "StepRun")
        run = Run.objects.create(
            runbook_id="x", runbook_title="X", runbook={}, database_id=db.pk, started_by_id=erin.pk
        )
        now = timezone.now()

        def step(step_id: str, state: str, kind: str = "action", **fields: Any) -> None:
            StepRun.objects.create(
                run=run,
                phase_index=0,
                position=StepRun.objects.count(),
                step_id=step_id,
                kind=kind,
                state=state,
                **fields,
            )

        ran = {"started_at": now, "finished_at": now, "heartbeat_at": now, "attempts": 1}
        step("ok", "done", verdict="pass", summary="fine", output="log", evidence={"a": 1}, **ran)
        step("said-fail", "failed", verdict="fail", summary="Failed: disk", output="x", **ran)
        step("died", "failed", verdict="fail", summary="The worker died mid-step (…)", **ran)
        step("crashed", "failed", verdict="fail", summary="The action crashed: KeyError", **ran)
        step("running", "running", output="so far", started_at=now, heartbeat_at=now, attempts=2)
        step("queued", "queued")
        step("locked", "locked")
        step("check", "done", kind="check", note="ticked")

        new = migrate(AFTER)
        steps = {s.step_id: s for s in new.get_model("runbooks", "StepRun").objects.all()}
        jobs = {j.step.step_id: j for j in new.get_model("runbooks", "StepJob").objects.all()}
        assert set(jobs) == {"ok", "said-fail", "died", "crashed", "running", "queued"}
        assert (jobs["ok"].state, jobs["ok"].verdict, jobs["ok"].output) == (
            "succeeded",
            "pass",
            "log",
        )
        assert jobs["ok"].evidence == {"a": 1} and jobs["ok"].summary == "fine"
        assert jobs["said-fail"].state == "succeeded" and jobs["said-fail"].verdict == "fail"
        assert jobs["died"].state == "interrupted" and jobs["crashed"].state == "failed"
        assert (jobs["running"].state, jobs["running"].attempt) == ("running", 2)
        assert jobs["running"].heartbeat_at == now and steps["running"].state == "started"
        assert jobs["queued"].state == "interrupted" and steps["queued"].state == "failed"
        assert steps["ok"].state == "done" and steps["check"].note == "ticked"
        assert steps["locked"].state == "locked"

        back = migrate(BEFORE)
        steps = {s.step_id: s for s in back.get_model("runbooks", "StepRun").objects.all()}
        assert (steps["ok"].state, steps["ok"].verdict, steps["ok"].output) == (
            "done",
            "pass",
            "log",
        )
        assert steps["ok"].evidence == {"a": 1} and steps["ok"].attempts == 1
        assert (
            steps["died"].summary.startswith("The worker died") and steps["died"].verdict == "fail"
        )
        assert (steps["running"].state, steps["running"].output) == ("running", "so far")
        assert steps["running"].attempts == 2 and steps["queued"].state == "failed"
    finally:
        migrate_to_latest()
