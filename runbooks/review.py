"""What the approver reads before deciding, on one page: each pending revision's SQL with its
findings (accepted ones marked, with who and why) and the comments on its statements, grades,
the rehearsal's timings and lock waits, the schema change from the rehearsal's copy, the backup
and its validations, the gates, the policy and exactly what an approval will be pinned to, and
the conversation on the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Prefetch

from dashboard.accounts.roles import Role, role_of
from dashboard.backups.models import Backup, Validation
from dashboard.lib import alembic
from dashboard.schema import analysis
from dashboard.schema.freshness import freshness
from dashboard.schema.models import GateRun, Rehearsal
from runbooks import engine, policy
from runbooks.models import Approval, Comment, Run, StepRun, StepState


@dataclass
class Statement:
    index: int
    sql: str
    lock: str
    tables: list[str]
    rewrites: bool
    scans: bool
    in_transaction: bool
    findings: list[Any] = field(default_factory=list)
    comments: list[Comment] = field(default_factory=list)

    @property
    def notes(self) -> list[Any]:
        """Style notes: listed folded, they never weigh on the grade."""
        return [f for f in self.findings if f.severity == "note"]


@dataclass
class RevisionReview:
    revision: str
    message: str
    grade: str
    reasons: list[str]
    previewable: bool
    error: str
    statements: list[Statement]
    loose: list[Any]  # findings tied to no statement
    timing: dict[str, Any] | None
    comments: list[Comment]  # on the revision as a whole

    @property
    def open_findings(self) -> int:
        return sum(
            1 for s in self.statements for f in s.findings if not f.accepted and f.counts
        ) + sum(1 for f in self.loose if not f.accepted and f.counts)


def _step_evidence(steps: list[StepRun], action: str) -> tuple[StepRun | None, dict[str, Any]]:
    found = [s for s in steps if s.action == action]
    step = found[-1] if found else None
    return step, (step.evidence if step is not None else {})


def context(run: Run, user: Any) -> dict[str, Any]:
    db = run.database
    steps = list(
        run.steps.prefetch_related(
            Prefetch("approvals", queryset=Approval.objects.select_related("user")), "jobs"
        )
    )
    comments = list(run.comments.select_related("user"))
    reports: list[Any] = []
    risk_error = ""
    if run.revisions:
        try:
            reports = analysis.reports_for(db, run.revisions)
        except (alembic.NotAnAlembicProject, alembic.AlembicError) as exc:
            risk_error = str(exc)
    rehearse_step, rehearsed = _step_evidence(steps, "schema.rehearse")
    rehearsal = (
        Rehearsal.objects.filter(pk=rehearsed["rehearsal"]).first()
        if rehearsed.get("rehearsal")
        else None
    )
    revisions = [_revision(r, rehearsal, comments) for r in reports]
    gates_step, gated = _step_evidence(steps, "gates.preflight")
    gate_id = gated.get("gate_run")
    gate_run = GateRun.objects.filter(pk=gate_id).first() if gate_id else None
    backup = Backup.objects.filter(pk=run.backup_id).first() if run.backup_id else None
    validations = list(Validation.objects.filter(backup=backup).order_by("-pk")) if backup else []
    approval_steps = [s for s in steps if s.kind == "approval"]
    current_hash = ""
    if run.revisions and not risk_error:
        current_hash = analysis.pinned_hash(db, run.revisions)
    decisions = []
    for step in approval_steps:
        for a in step.approvals.all():
            decisions.append({"approval": a, "step": step, "void": a.void_reasons(run)})
    deciding = next((s for s in approval_steps if s.state == StepState.OPEN), None)
    requirement = policy.of_run(run)
    pending = analysis.pending_of(db)
    return {
        "db": db,
        "run": run,
        "revisions": revisions,
        "risk_error": risk_error,
        "worst": analysis.worst(reports) if reports else run.max_grade or "low",
        "rehearsal": rehearsal,
        "rehearse_step": rehearse_step,
        "rehearsal_fresh": freshness(rehearsal, pending) if rehearsal else None,
        "gate_fresh": freshness(gate_run, pending) if gate_run else None,
        "schema_diff": _schema_diff(rehearsal),
        "gate_run": gate_run,
        "gates": gated.get("gates", []),
        "gates_step": gates_step,
        "backup": backup,
        "validations": validations,
        "conversation": [c for c in comments if not c.revision],
        "decisions": decisions,
        "deciding": deciding,
        "may_decide": _may_decide(run, deciding, user),
        "requirement": requirement,
        "cannot_be_met": policy.cannot_be_met(run, deciding) if deciding else "",
        "staging_missing": policy.staging_missing(run),
        "pin": {
            "target": run.target_revision,
            "risk_hash": current_hash or run.risk_hash,
            "risk_changed": bool(current_hash and current_hash != run.risk_hash and run.risk_hash),
            "backup": backup,
            "window_end": run.window_end,
        },
        "waiting": engine.waiting_for(run),
        "nav": "runs",
    }


def _revision(report: Any, rehearsal: Rehearsal | None, comments: list[Comment]) -> RevisionReview:
    by_statement: dict[int, list[Any]] = {}
    loose = []
    for finding in report.findings:
        if finding.statement_index is None:
            loose.append(finding)
        else:
            by_statement.setdefault(finding.statement_index, []).append(finding)
    mine = [c for c in comments if c.revision == report.revision]
    statements = [
        Statement(
            index=s.index,
            sql=s.sql,
            lock=s.lock,
            tables=list(s.tables),
            rewrites=s.rewrites,
            scans=s.scans,
            in_transaction=s.in_transaction,
            findings=by_statement.get(s.index, []),
            comments=[c for c in mine if c.statement == s.index],
        )
        for s in report.statements
    ]
    return RevisionReview(
        revision=report.revision,
        message=report.message,
        grade=report.grade,
        reasons=list(report.reasons),
        previewable=report.previewable,
        error=report.error,
        statements=statements,
        loose=loose,
        timing=rehearsal.timing_of(report.revision) if rehearsal else None,
        comments=[c for c in mine if c.statement is None],
    )


def _schema_diff(rehearsal: Rehearsal | None) -> dict[str, Any] | None:
    """The schema change the rehearsal's copy went through (before and after), when it kept
    them; None otherwise."""
    change = rehearsal.schema_change if rehearsal is not None else None
    if change is None:
        return None
    return {"diff": change.lines, "summary": change.summary}


def _may_decide(run: Run, step: StepRun | None, user: Any) -> str:
    """ "" when ``user`` may decide now, otherwise why not (shown instead of the form)."""
    if step is None:
        return "No approval step is waiting for a decision."
    role = role_of(user)
    needed = Role[(step.role or "lead").upper()]
    if role is None or role < needed:
        return f"Only a {needed.label} (or higher) decides here."
    if step.four_eyes and user.pk == run.started_by_id:
        return "You started this run: someone else must review it (four eyes)."
    return ""
