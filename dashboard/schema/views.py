from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from dashboard.accounts.roles import Request, Role, role_required
from dashboard.databases.models import ManagedDatabase
from dashboard.lib import alembic
from dashboard.schema import analysis, gates, graph, rehearsal
from dashboard.schema.acceptance import AcceptanceError, accept
from dashboard.schema.forms import AcceptFindingForm
from dashboard.schema.freshness import freshness
from dashboard.schema.graph import draw
from dashboard.schema.models import GateRun, Rehearsal, RiskAcceptance
from dashboard.schema.origins import gate_run_origins
from dashboard.schema.status import last_good_check, status_of


def _reports_or_error(
    db: ManagedDatabase, revisions: list[str], **known: Any
) -> tuple[dict[str, Any], str]:
    try:
        return {r.revision: r for r in analysis.reports_for(db, revisions, **known)}, ""
    except (alembic.NotAnAlembicProject, alembic.AlembicError) as exc:
        return {}, str(exc)


@require_GET
@role_required(Role.VIEWER)
def history(request: Request, name: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    check = last_good_check(db)
    status = status_of(db, check)
    data = status.history.to_json() if status.history else None
    pending = list(status.history.pending) if status.history and status.known else []
    tree = status.history.tree if status.history else None
    reports, risk_error = _reports_or_error(db, pending, check=check, tree=tree)
    timed = rehearsal.latest_rehearsal(db, pending) if pending else None
    rows = draw(data["revisions"]) if data else []
    lanes = max((row["width"] for row in rows), default=1)
    for row in rows:
        row["report"] = reports.get(row["id"])
        row["timing"] = timed.timing_of(row["id"]) if timed else None
    context = {
        "db": db,
        "check": check,
        "latest": db.latest_check(),
        "status": status,
        "data": data,
        "rows": rows,
        # The graph's column: as wide as its widest SVG (graph.py), and the cell's padding.
        "graph_px": graph.PAD * 2 + max(lanes - 1, 0) * graph.COL + 8,
        # Branch labels or depends_on in the revision column: it needs more of the width.
        "labelled": any(row.get("branch_labels") or row.get("depends") for row in rows),
        "worst": analysis.worst(list(reports.values())) if reports else "",
        "risk_error": risk_error,
        "rehearsal": timed,
        "nav": "overview",
    }
    return render(request, "schema/history.html", context)


@require_GET
@role_required(Role.VIEWER)
def revision(request: Request, name: str, rev: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    return _revision_page(request, db, rev, AcceptFindingForm(rules=[]))


def _revision_page(
    request: Request, db: ManagedDatabase, rev: str, form: AcceptFindingForm, status: int = 200
) -> HttpResponse:
    script = analysis.known_revision(db, rev)
    if script is None:
        raise Http404(f"No revision {rev} in {db.name}'s scripts.")
    check = last_good_check(db)
    pending = analysis.pending_of(db, check)
    reports, risk_error = _reports_or_error(db, [rev])
    report = reports.get(rev)
    open_rules = sorted({f.rule for f in report.findings if not f.accepted}) if report else []
    if not form.is_bound:
        form = AcceptFindingForm(rules=open_rules)
    by_statement: dict[int, list[Any]] = {}
    loose: list[Any] = []
    for finding in report.findings if report else []:
        if finding.statement_index is None:
            loose.append(finding)
        else:
            by_statement.setdefault(finding.statement_index, []).append(finding)
    statements = [
        {"info": s, "findings": by_statement.get(s.index, [])}
        for s in (report.statements if report else [])
    ]
    timed = rehearsal.latest_rehearsal(db, pending.revisions) if pending.revisions else None
    context = {
        "db": db,
        "script": script,
        "report": report,
        "risk_error": risk_error,
        "statements": statements,
        "loose": loose,
        "is_pending": rev in pending.revisions,
        "known": pending.known,
        "timing": timed.timing_of(rev) if timed else None,
        "rehearsal": timed,
        "acceptances": RiskAcceptance.objects.filter(database=db, revision=rev).select_related(
            "accepted_by"
        ),
        "form": form,
        "open_rules": open_rules,
        "server_major": analysis.server_major(check),
        "sized": bool(analysis.sizes_of(check)),
        "nav": "overview",
    }
    return render(request, "schema/revision.html", context, status=status)


@require_POST
@role_required(Role.LEAD)
def accept_finding(request: Request, name: str, rev: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    if analysis.known_revision(db, rev) is None:
        raise Http404(f"No revision {rev} in {db.name}'s scripts.")
    reports, _ = _reports_or_error(db, [rev])
    report = reports.get(rev)
    rules = sorted({f.rule for f in report.findings if not f.accepted}) if report else []
    form = AcceptFindingForm(request.POST, rules=rules)
    if form.is_valid():
        try:
            accept(request.user, db, rev, form.cleaned_data["rule"], form.cleaned_data["comment"])
        except AcceptanceError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"{form.cleaned_data['rule']} accepted for {rev}.")
            return redirect("schema-revision", db.name, rev)
    return _revision_page(request, db, rev, form, status=400)


# --- Preflight: gates and rehearsal ---


RECENT = 6  # gate runs and rehearsals listed on the preflight page, newest first


def _live(db: ManagedDatabase, pending: analysis.Pending | None = None) -> dict[str, Any]:
    """The newest gate run and rehearsal, each with whether it is current (freshness), and the
    recent ones with theirs and, for a gate run a runbook ran, its run."""
    pending = pending if pending is not None else analysis.pending_of(db)
    runs = list(db.gate_runs.select_related("requested_by")[:RECENT])
    rehearsals = list(db.rehearsals.select_related("requested_by", "backup")[:RECENT])
    origins = gate_run_origins(db.name, [r.pk for r in runs])
    recent_runs = [
        {"run": r, "fresh": freshness(r, pending), "origin": origins.get(r.pk)} for r in runs
    ]
    recent_rehearsals = [{"rehearsed": r, "fresh": freshness(r, pending)} for r in rehearsals]
    run = runs[0] if runs else None
    rehearsed = rehearsals[0] if rehearsals else None
    return {
        "run": run,
        "run_fresh": recent_runs[0]["fresh"] if run else None,
        "run_origin": origins.get(run.pk) if run else None,
        "rehearsed": rehearsed,
        "rehearsed_fresh": recent_rehearsals[0]["fresh"] if rehearsed else None,
        "recent_runs": recent_runs,
        "recent_rehearsals": recent_rehearsals,
        "active": bool((run and not run.is_done) or (rehearsed and not rehearsed.is_done)),
    }


@require_GET
@role_required(Role.VIEWER)
def preflight(request: Request, name: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    if request.htmx:
        live = _live(db)
        response = render(request, "schema/_preflight_live.html", {"db": db, **live})
        if not live["active"]:
            response.status_code = HttpResponseStopPolling.status_code
        return response
    pending, reports = _pending_reports(db)
    live = _live(db, pending)
    context = {
        "db": db,
        **live,
        "pending": pending,
        "reports": reports,
        "worst": analysis.worst(reports) if reports else "",
        "tables": analysis.tables_touched(reports),
        "nav": "overview",
    }
    return render(request, "schema/preflight.html", context)


def _pending_reports(db: ManagedDatabase) -> tuple[analysis.Pending, list[Any]]:
    try:
        return analysis.pending_reports(db)
    except (alembic.NotAnAlembicProject, alembic.AlembicError):
        return analysis.pending_of(db), []


@require_POST
@role_required(Role.ENGINEER)
def run_gates(request: Request, name: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    pending, reports = _pending_reports(db)
    run = gates.request_gate_run(
        request.user, db, revisions=pending.revisions, tables=analysis.tables_touched(reports)
    )
    messages.success(request, f"Gate run #{run.pk} queued; a worker will take it.")
    return redirect("schema-preflight", db.name)


@require_POST
@role_required(Role.ENGINEER)
def rehearse(request: Request, name: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    try:
        queued = rehearsal.request_rehearsal(request.user, db)
    except rehearsal.RehearsalError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Rehearsal #{queued.pk} queued; a worker will take it.")
    return redirect("schema-preflight", db.name)


@require_GET
@role_required(Role.VIEWER)
def gate_run(request: Request, name: str, run_id: int) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    run = get_object_or_404(GateRun.objects.filter(database=db), pk=run_id)
    context = {
        "db": db,
        "run": run,
        "run_fresh": freshness(run, analysis.pending_of(db)),
        "run_origin": gate_run_origins(db.name, [run.pk]).get(run.pk),
        "nav": "overview",
    }
    return render(request, "schema/gate_run.html", context)


@require_GET
@role_required(Role.VIEWER)
def rehearsal_detail(request: Request, name: str, rehearsal_id: int) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    found = get_object_or_404(Rehearsal.objects.filter(database=db), pk=rehearsal_id)
    context = {
        "db": db,
        "rehearsed": found,
        "rehearsed_fresh": freshness(found, analysis.pending_of(db)),
        "nav": "overview",
    }
    return render(request, "schema/rehearsal.html", context)
