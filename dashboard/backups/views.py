from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Prefetch, QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from dashboard.accounts.roles import Request, Role, role_required
from dashboard.backups import plots
from dashboard.backups.forms import BackupPolicyForm
from dashboard.backups.models import Backup, BackupPolicy, Validation
from dashboard.backups.pipeline import request_backup
from dashboard.backups.policy import update_policy
from dashboard.backups.status import activity, series, status_of, wal_status
from dashboard.backups.templatetags.backups_ui import seconds
from dashboard.backups.validation import request_validation
from dashboard.databases.models import ManagedDatabase

PER_PAGE = 25


def _activity(request: Request, db: ManagedDatabase) -> HttpResponse:
    """The live fragment. Once nothing is active, stop polling and reload the page (when it was
    polling) so the finished backup shows in the status and the history."""
    current = activity(db)
    response = render(request, "backups/_activity.html", {"db": db, "activity": current})
    if request.htmx and not current.active:
        response.status_code = HttpResponseStopPolling.status_code
        response["HX-Refresh"] = "true"
    return response


def _history(db: ManagedDatabase) -> QuerySet[Backup]:
    validations = Validation.objects.order_by("-created_at")
    return (
        db.backups.select_related("requested_by")
        .prefetch_related(Prefetch("validations", queryset=validations))
        .order_by("-created_at")
    )


@require_GET
@role_required(Role.VIEWER)
def status(request: Request, name: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    if request.htmx:
        return _activity(request, db)
    trend = series(db)
    context = {
        "db": db,
        "status": status_of(db),
        "wal": wal_status(db),
        "activity": activity(db),
        "page": Paginator(_history(db), PER_PAGE).get_page(request.GET.get("page")),
        "size_plot": plots.sparkline(trend.sizes, trend.labels, fmt=filesizeformat),
        "duration_plot": plots.sparkline(trend.durations, trend.labels, fmt=seconds),
        "trend": trend,
        "nav": "overview",
    }
    return render(request, "backups/status.html", context)


@require_GET
@role_required(Role.VIEWER)
def detail(request: Request, name: str, backup_id: int) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    backup = get_object_or_404(_history(db), pk=backup_id)
    context = {"db": db, "backup": backup, "activity": activity(db), "nav": "overview"}
    return render(request, "backups/detail.html", context)


@require_POST
@role_required(Role.ENGINEER)
def back_up(request: Request, name: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    backup = request_backup(request.user, db, reason="on demand")
    messages.success(request, f"Backup #{backup.pk} queued; a worker will take it.")
    return redirect("backup-status", db.name)


@require_POST
@role_required(Role.ENGINEER)
def validate(request: Request, name: str, backup_id: int) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    backup = get_object_or_404(db.backups, pk=backup_id)
    try:
        validation = request_validation(request.user, backup)
    except ValueError as exc:  # not completed (any more): say so, change nothing
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Validation #{validation.pk} of backup #{backup.pk} queued.")
    if request.POST.get("from") == "detail":
        return redirect("backup-detail", db.name, backup.pk)
    return redirect("backup-status", db.name)


@require_http_methods(["GET", "POST"])
@role_required(Role.LEAD)
def edit_policy(request: Request, name: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    policy = BackupPolicy.objects.filter(database=db).first() or BackupPolicy(database=db)
    form = BackupPolicyForm(request.POST or None, instance=policy)
    if request.method == "POST" and form.is_valid():
        update_policy(request.user, form.save(commit=False))
        messages.success(request, f"Saved the backup policy of {db.name}; schedules updated.")
        return redirect("backup-status", db.name)
    return render(request, "backups/policy.html", {"db": db, "form": form, "nav": "overview"})
