"""A run's reports: the run CSV (one row per step, then one per approval decision: who did what,
when, with what result), the JSON and the audit CSV of its audit events (with the hash chain
fields, the JSON verifiable outside Runway), and a PDF rendered from the run page's own
templates: who ticked and approved what, gate evidence, backup and validation ids, risk
findings, timings, its audit events."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db.models import Prefetch, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from dashboard.accounts.roles import Role, role_required
from dashboard.audit import reports as audit_reports
from dashboard.audit.models import AuditEvent
from dashboard.backups.models import Validation
from runbooks.models import Approval, Run, StepJob
from runbooks.progress import run_context

FORMATS = ("csv", "json", "pdf", "audit.csv")
RUN_CSV_HEADER = (
    "record",
    "phase",
    "step",
    "kind",
    "title",
    "state",
    "who",
    "when",
    "note or summary",
    "verdict",
    "decision",
    "pinned target",
    "pinned risk report",
    "pinned backup",
    "void because",
)


def run_events(run: Run) -> QuerySet[AuditEvent]:
    """The run's own events, its step jobs' (interrupted, cancelled...), and those of the backup
    it took and that backup's validations."""
    match = Q(object_type="run", object_id=str(run.pk))
    attempts = StepJob.objects.filter(step__run=run).values_list("pk", flat=True)
    match |= Q(object_type="stepjob", object_id__in=[str(j) for j in attempts])
    if run.backup_id:
        validations = Validation.objects.filter(backup_id=run.backup_id).values_list(
            "pk", flat=True
        )
        match |= Q(object_type="backup", object_id=str(run.backup_id))
        match |= Q(object_type="validation", object_id__in=[str(v) for v in validations])
    return AuditEvent.objects.filter(match).order_by("id")


def _step_evidence(run: Run, action: str) -> dict[str, Any]:
    """The evidence of the action's last step, from its current attempt (an interrupted or
    cancelled attempt has none)."""
    step = run.steps.filter(action=action).order_by("-phase_index", "-position").first()
    return step.evidence if step and step.evidence else {}


def summary(run: Run) -> dict[str, Any]:
    """What the report's first page says, also the head of the JSON export."""
    validations = (
        list(Validation.objects.filter(backup_id=run.backup_id).order_by("pk"))
        if run.backup_id
        else []
    )
    return {
        "run": run.pk,
        "runbook": run.runbook_id,
        "title": run.runbook_title,
        "database": run.database.name,
        "environment": run.database.environment,
        "state": run.state,
        "reason": run.reason,
        "target_revision": run.target_revision,
        "from_revisions": run.from_revisions,
        "revisions": run.revisions,
        "started_by": run.started_by.get_username(),
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "backup": run.backup_id,
        "validations": [{"id": v.pk, "state": v.state} for v in validations],
        "risk_hash": run.risk_hash,
        "approvals": [
            {
                "by": a.user.get_username(),
                "decision": a.decision,
                "comment": a.comment,
                "at": a.created_at.isoformat(),
                "target_revision": a.target_revision,
                "risk_hash": a.risk_hash,
                "backup": a.backup_id_seen,
                "void": a.void_reasons(run),
            }
            for a in run.approvals.select_related("user")
        ],
        "steps": [
            {
                "phase": s.phase_index + 1,
                "step": s.step_id,
                "kind": s.kind,
                "title": s.title,
                "state": s.state,
                "verdict": s.verdict,
                "summary": s.summary,
                "note": s.note,
                "done_by": s.done_by.get_username() if s.done_by else None,
                "started_at": s.started_at.isoformat() if s.started_at else None,
                "finished_at": s.finished_at.isoformat() if s.finished_at else None,
                "attempts": [_attempt(j) for j in s.jobs.all()],
            }
            for s in run.steps.select_related("done_by").prefetch_related(
                Prefetch("jobs", queryset=StepJob.objects.defer("output", "evidence"))
            )
        ],
    }


def _attempt(job: StepJob) -> dict[str, Any]:
    return {
        "job": job.pk,
        "attempt": job.attempt,
        "state": job.state,
        "verdict": job.verdict,
        "summary": job.summary,
        "error": job.error,
        "worker": job.worker,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else ""


def run_csv_rows(run: Run) -> Iterator[tuple[str, ...]]:
    """The run CSV's rows after its header: each step in phase order (a check: who ticked it and
    their note; an action: its summary and verdict, by Runway; an approval: who decided), then
    each approval decision with what it was pinned to (the target, the risk report's hash, the
    backup the approver saw) and, if it no longer holds, why."""
    safe = audit_reports.safe_cell
    steps = list(
        run.steps.select_related("done_by")
        .prefetch_related(Prefetch("approvals", queryset=Approval.objects.select_related("user")))
        .order_by("phase_index", "position")
    )
    titles = {i: str(phase.get("title", "")) for i, phase in enumerate(run.phases)}
    for s in steps:
        phase = f"{s.phase_index + 1}. {titles.get(s.phase_index, '')}".strip()
        if s.kind == "check":
            who, said = (s.done_by.get_username() if s.done_by else ""), s.note
        elif s.kind == "action":
            who, said = ("runway" if s.started_at else ""), s.summary
        else:
            who = ", ".join(a.user.get_username() for a in s.approvals.all())
            said = s.summary
        yield (
            "step", phase, s.step_id, s.kind, safe(s.title), s.state, safe(who),
            _when(s.finished_at or s.started_at), safe(said), s.verdict, "", "", "", "", "",
        )  # fmt: skip
    for s in steps:
        phase = f"{s.phase_index + 1}. {titles.get(s.phase_index, '')}".strip()
        for a in s.approvals.all():
            void = a.void_reasons(run)
            yield (
                "decision", phase, s.step_id, s.kind, safe(s.title),
                "void" if void else "holds", safe(a.user.get_username()), _when(a.created_at),
                safe(a.comment), "", a.decision, safe(a.target_revision), a.risk_hash,
                f"#{a.backup_id_seen}" if a.backup_id_seen else "", safe("; ".join(void)),
            )  # fmt: skip


def stream_run_csv(run: Run) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RUN_CSV_HEADER)
    writer.writerows(run_csv_rows(run))
    yield buffer.getvalue().encode()


@require_GET
@role_required(Role.VIEWER)
def run_report(request: HttpRequest, name: str, run_id: int, fmt: str) -> HttpResponseBase:
    if fmt not in FORMATS:
        raise Http404(f"No {fmt} report: choose csv, audit.csv, json or pdf.")
    run = (
        Run.objects.select_related("database", "started_by")
        .filter(pk=run_id, database__name=name)
        .first()
    )
    if run is None:
        raise Http404("No such run on this database.")
    head = audit_reports.chain_head()
    events = run_events(run).filter(id__lte=head[0]) if head else run_events(run).none()
    filename = f"runway-run-{run.pk}-{run.database.name}.{fmt}"
    response: HttpResponseBase
    if fmt == "csv":
        response = StreamingHttpResponse(
            stream_run_csv(run), content_type="text/csv; charset=utf-8"
        )
    elif fmt == "audit.csv":
        response = StreamingHttpResponse(
            audit_reports.stream_csv(events), content_type="text/csv; charset=utf-8"
        )
    elif fmt == "json":
        meta = {
            "title": f"Runway run #{run.pk} report",
            "generated_at": timezone.now().isoformat(timespec="seconds"),
            "generated_by": request.user.get_username(),
            "chain_head": {"id": head[0], "hash": head[1]} if head else None,
            "algorithm": audit_reports.ALGORITHM,
            "run": summary(run),
        }
        response = StreamingHttpResponse(
            audit_reports.stream_json(events, meta=meta), content_type="application/json"
        )
    else:
        response = HttpResponse(
            audit_reports.render_pdf("runbooks/report.html", _pdf_context(request, run, events)),
            content_type="application/pdf",
        )
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response


def _pdf_context(request: HttpRequest, run: Run, events: QuerySet[AuditEvent]) -> dict[str, Any]:
    risk = _step_evidence(run, "schema.risk_report")
    listed = list(events[: settings.RUNWAY_PDF_MAX_EVENTS])
    return run_context(run) | {
        "listing": audit_reports.listing(listed, value_chars=160, titled=True),
        "truncated": len(listed) == settings.RUNWAY_PDF_MAX_EVENTS,
        "generated_by": request.user.get_username(),
        "generated_at": timezone.now(),
        "chain": audit_reports.check_chain(listed),
        "risk": risk.get("revisions", []),
        "gates": _step_evidence(run, "gates.preflight").get("gates", []),
        "upgrade": _step_evidence(run, "schema.upgrade").get("revisions", []),
        "rehearsal": _step_evidence(run, "schema.rehearse"),
        "validation": _step_evidence(run, "backup.validate"),
        "approvals": run.approvals.select_related("user"),
        "user": request.user,
    }
