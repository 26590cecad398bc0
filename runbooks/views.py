from __future__ import annotations

import hashlib

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.core.validators import slug_re
from django.db.models import Prefetch, Q, QuerySet
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from dashboard.accounts.roles import Request, Role, role_required
from dashboard.databases.models import ManagedDatabase
from runbooks import engine, inbox, library, review, rollback
from runbooks.forms import (
    AbortForm,
    AbortStepForm,
    AmendForm,
    CancelRollbackForm,
    CommentForm,
    DecideForm,
    RequestReviewForm,
    RunFilterForm,
    StartRunForm,
    TickForm,
)
from runbooks.loader import RunbookError
from runbooks.models import Run, StepJob, StepRun
from runbooks.progress import run_context

PER_PAGE = 25


def _runs() -> QuerySet[Run]:
    return Run.objects.select_related("database", "started_by")


def _run(name: str, run_id: int) -> Run:
    """The run, only through its own database's URL."""
    return get_object_or_404(_runs(), pk=run_id, database__name=name)


def _step(run: Run, step_id: str) -> StepRun:
    """The run's step. Step ids are slugs (the URLs say so); anything else, as the ``step``
    parameter of the live output may be, is no step: 404, before PostgreSQL sees it."""
    if not slug_re.match(step_id):
        raise Http404("No such step in this run.")
    return get_object_or_404(run.steps, step_id=step_id)


@require_GET
@role_required(Role.VIEWER)
def runs(request: Request) -> HttpResponse:
    form = RunFilterForm(request.GET or None)
    found = _runs().order_by("-started_at")
    if form.is_valid():
        data = form.cleaned_data
        if data["database"]:
            found = found.filter(database__name=data["database"])
        if data["state"]:
            found = found.filter(state=data["state"])
        if data["mine"]:
            found = found.filter(pk__in=inbox.run_ids(request.user))
        if data["person"]:
            person = data["person"]
            found = found.filter(
                Q(started_by__username=person)
                | Q(steps__done_by__username=person)
                | Q(approvals__user__username=person)
            ).distinct()
    found = found.prefetch_related(
        "steps__approvals",
        Prefetch("steps__jobs", queryset=StepJob.objects.only("step_id", "attempt", "state")),
    )
    page = Paginator(found, PER_PAGE).get_page(request.GET.get("page"))
    rows = [{"run": r, "waiting": engine.waiting_for(r)} for r in page]
    context = {
        "form": form,
        "page": page,
        "rows": rows,
        "databases": ManagedDatabase.objects.order_by("name").values_list("name", flat=True),
        "nav": "runs",
    }
    return render(request, "runbooks/runs.html", context)


@require_http_methods(["GET", "POST"])
@role_required(Role.ENGINEER)
def start(request: Request) -> HttpResponse:
    try:
        books = library.books()
    except RunbookError as exc:
        return render(request, "runbooks/start.html", {"error": str(exc)}, status=500)
    initial = {k: request.GET[k] for k in ("runbook", "database", "target") if request.GET.get(k)}
    chosen = (request.POST or request.GET).get("database", "")
    db = ManagedDatabase.objects.filter(name=chosen).first() if slug_re.match(chosen) else None
    form = StartRunForm(request.POST or None, books=books, targets=_targets(db), initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        book = books[data["runbook"]]
        # No target chosen: the head, for a runbook that migrates.
        target = data["target"] or (_head(data["database"]) if book.needs_target else "")
        try:
            run = engine.start_run(
                request.user,
                book,
                data["database"],
                target,
                planned_at=data["planned_at"],
                window_start=data["window_start"],
                window_end=data["window_end"],
            )
        except engine.RunError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Run #{run.pk} started.")
            return redirect(run)
    status = 400 if form.errors else 200
    context = {"form": form, "books": books.values(), "db": db, "nav": "runs"}
    return render(request, "runbooks/start.html", context, status=status)


def _head(db: ManagedDatabase) -> str:
    from dashboard.schema.analysis import pending_of

    return pending_of(db).target


def _targets(db: ManagedDatabase | None) -> list[tuple[str, str]]:
    """The revisions a run on ``db`` may go to: its pending ones, the head first."""
    from dashboard.lib import alembic
    from dashboard.schema.analysis import known_revision, pending_of

    if db is None:
        return []
    try:
        pending = pending_of(db)
        choices = []
        for rev in reversed(pending.revisions):
            script = known_revision(db, rev)
            message = script.message if script is not None and script.message else ""
            head = " (head)" if rev == pending.target else ""
            choices.append((rev, f"{rev}{head}" + (f" — {message[:80]}" if message else "")))
    except (alembic.NotAnAlembicProject, alembic.AlembicError):
        return []
    return choices


def stamp(run: Run) -> str:
    """Changes whenever anything on the run page would but an action's live log (polled on its
    own): the page reloads when it does."""
    states = run.steps.order_by("pk").values_list("pk", "state")
    attempts = StepJob.objects.filter(step__run=run).order_by("pk")
    ends = attempts.values_list("pk", "state", "verdict")
    decisions = run.approvals.count()
    raw = f"{run.state}|{run.phase_index}|{run.risk_hash}|{list(states)}|{list(ends)}|{decisions}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@require_GET
@role_required(Role.VIEWER)
def detail(request: Request, name: str, run_id: int) -> HttpResponse:
    run = _run(name, run_id)
    if request.htmx and "step" in request.GET:
        step = _step(run, request.GET["step"])
        response = render(
            request,
            "runbooks/_output.html",
            {"db": run.database, "run": run, "step": step, "job": step.job},
        )
        if not step.is_live:
            response.status_code = HttpResponseStopPolling.status_code
        return response
    if request.htmx:
        if request.GET.get("stamp") == stamp(run):
            if not run.is_active:
                return HttpResponse(status=HttpResponseStopPolling.status_code)
            return HttpResponse(status=204)
        response = HttpResponse(status=200)
        response["HX-Refresh"] = "true"
        return response
    # The stamp first: a step that ends while the page renders then differs from it, and the
    # next poll reloads. Taken after, it could already hold the new state the page lacks, and
    # the page would wait forever.
    current = stamp(run)
    return render(request, "runbooks/run.html", run_context(run) | {"stamp": current})


def _back(request: Request, run: Run, error: str = "", ok: str = "") -> HttpResponse:
    if error:
        messages.error(request, error)
    if ok:
        messages.success(request, ok)
    return redirect(run)


@require_POST
@role_required(Role.ENGINEER)
def tick(request: Request, name: str, run_id: int, step_id: str) -> HttpResponse:
    run = _run(name, run_id)
    step = _step(run, step_id)
    form = TickForm(request.POST)
    if not form.is_valid():
        return _back(request, run, error=f"The note was refused: {form.errors['note'][0]}")
    try:
        engine.tick(request.user, run, step, form.cleaned_data["note"])
    except engine.RunError as exc:
        return _back(request, run, error=str(exc))
    return _back(request, run, ok=f"Ticked “{step.title}”.")


@require_POST
@role_required(Role.ENGINEER)
def retry(request: Request, name: str, run_id: int, step_id: str) -> HttpResponse:
    run = _run(name, run_id)
    try:
        engine.retry(request.user, run, _step(run, step_id))
    except engine.RunError as exc:
        return _back(request, run, error=str(exc))
    return _back(request, run, ok="Queued again.")


@require_POST
@role_required(Role.LEAD)
def decide(request: Request, name: str, run_id: int, step_id: str) -> HttpResponse:
    run = _run(name, run_id)
    step = _step(run, step_id)
    form = DecideForm(request.POST)
    if not form.is_valid():
        problems = "; ".join(f"{k}: {v[0]}" for k, v in form.errors.items())
        return _back(request, run, error=f"Nothing was recorded: {problems}")
    try:
        approval = engine.decide(
            request.user, run, step, form.cleaned_data["decision"], form.cleaned_data["comment"]
        )
    except engine.RunError as exc:
        return _back(request, run, error=str(exc))
    then = {
        "approve": " Nothing starts until someone presses Deploy.",
        "changes": " The run is back with its engineer.",
    }.get(approval.decision, "")
    return _back(
        request, run, ok=f"{approval.get_decision_display()}: recorded with your comment.{then}"
    )


@require_POST
@role_required(Role.ENGINEER)
def abort(request: Request, name: str, run_id: int) -> HttpResponse:
    run = _run(name, run_id)
    form = AbortForm(request.POST)
    if not form.is_valid():
        return _back(request, run, error="Say why the run is aborted.")
    try:
        engine.abort(request.user, run, form.cleaned_data["reason"])
    except engine.RunError as exc:
        return _back(request, run, error=str(exc))
    return _back(request, run, ok="Run aborted.")


@require_POST
@role_required(Role.ENGINEER)
def abort_step(request: Request, name: str, run_id: int, step_id: str) -> HttpResponse:
    """Abort a running step (a migration stops safely: see ``engine.abort_step``)."""
    run = _run(name, run_id)
    step = _step(run, step_id)
    form = AbortStepForm(request.POST)
    if not form.is_valid():
        problems = "; ".join(f"{k}: {v[0]}" for k, v in form.errors.items())
        return _back(request, run, error=f"Nothing was aborted: {problems}")
    try:
        engine.abort_step(
            request.user, run, step, form.cleaned_data["reason"], grace=form.cleaned_data["grace"]
        )
    except engine.RunError as exc:
        return _back(request, run, error=str(exc))
    return _back(
        request,
        run,
        ok=f"Abort requested for “{step.title}”: it stops safely and says where the database is.",
    )


@require_POST
@role_required(Role.LEAD)
def cancel_rollback(request: Request, name: str, run_id: int) -> HttpResponse:
    """A lead cancels a rollback within its grace period (see ``rollback.cancel_rollback``)."""
    run = _run(name, run_id)
    form = CancelRollbackForm(request.POST)
    if not form.is_valid():
        return _back(
            request, run, error="Nothing was cancelled: say why the rollback is cancelled."
        )
    try:
        rollback.cancel_rollback(request.user, run, form.cleaned_data["reason"])
    except rollback.RollbackError as exc:
        return _back(request, run, error=str(exc))
    return _back(request, run, ok="Rollback cancelled: nothing was changed on the database.")


@require_GET
@role_required(Role.VIEWER)
def review_page(request: Request, name: str, run_id: int) -> HttpResponse:
    """Everything the approver reads before deciding, and the decision."""
    run = _run(name, run_id)
    context = review.context(run, request.user)
    context |= {
        "decide_form": DecideForm(),
        "comment_form": CommentForm(),
        "amend_form": AmendForm(
            targets=_targets(run.database),
            initial={
                "target": run.target_revision,
                "planned_at": run.planned_at,
                "window_start": run.window_start,
                "window_end": run.window_end,
            },
        ),
        "request_form": RequestReviewForm(),
    }
    return render(request, "runbooks/review.html", context)


def _problems(form: forms.Form) -> str:
    return "; ".join(f"{k}: {v[0]}" for k, v in form.errors.items())


def _to_review(request: Request, run: Run, error: str = "", ok: str = "") -> HttpResponse:
    _back(request, run, error, ok)
    return redirect("run-review", run.database.name, run.pk)


@require_POST
@role_required(Role.ENGINEER)
def deploy(request: Request, name: str, run_id: int) -> HttpResponse:
    run = _run(name, run_id)
    try:
        engine.deploy(request.user, run)
    except engine.RunError as exc:
        return _back(request, run, error=str(exc))
    return _back(request, run, ok="Deploying: the execution phase has started.")


@require_POST
@role_required(Role.ENGINEER)
def amend(request: Request, name: str, run_id: int) -> HttpResponse:
    run = _run(name, run_id)
    form = AmendForm(request.POST, targets=_targets(run.database))
    if not form.is_valid():
        return _to_review(request, run, error=f"Nothing was changed: {_problems(form)}")
    data = form.cleaned_data
    try:
        engine.amend(
            request.user,
            run,
            data["target"],
            planned_at=data["planned_at"],
            window_start=data["window_start"],
            window_end=data["window_end"],
        )
    except engine.RunError as exc:
        return _to_review(request, run, error=f"Nothing was changed: {exc}")
    return _back(request, run, ok="Amended: the review opens again once the run gets there.")


@require_POST
@role_required(Role.ENGINEER)
def request_review(request: Request, name: str, run_id: int) -> HttpResponse:
    run = _run(name, run_id)
    form = RequestReviewForm(request.POST)
    if not form.is_valid():
        return _to_review(request, run, error="Say what you changed, for the reviewers.")
    try:
        engine.request_review(request.user, run, form.cleaned_data["note"])
    except engine.RunError as exc:
        return _to_review(request, run, error=str(exc))
    return _to_review(request, run, ok="Review requested: the leads are told.")


@require_POST
@role_required(Role.ENGINEER)
def comment(request: Request, name: str, run_id: int) -> HttpResponse:
    run = _run(name, run_id)
    form = CommentForm(request.POST)
    if not form.is_valid():
        return _to_review(request, run, error=f"The comment was not saved: {_problems(form)}")
    data = form.cleaned_data
    try:
        engine.comment(request.user, run, data["body"], data["revision"] or "", data["statement"])
    except engine.RunError as exc:
        return _to_review(request, run, error=f"The comment was not saved: {exc}")
    return _to_review(request, run, ok="Comment added.")
