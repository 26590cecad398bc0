from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from dashboard.accounts.refusals import refuse
from dashboard.accounts.roles import Request, Role, has_role, role_required
from dashboard.databases import checks, registry, run_modes
from dashboard.databases.forms import ManagedDatabaseForm
from dashboard.databases.models import ManagedDatabase
from dashboard.lib import pg


@require_GET
@role_required(Role.VIEWER)
def detail(request: Request, name: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase.objects.select_related("partner"), name=name)
    context = {
        "db": db,
        "check": db.latest_check(),
        "may_confirm": has_role(request.user, registry.connection_role(db)),
        "connection_role": registry.connection_role(db).label,
        "runs": run_modes.summary(db),
    }
    return render(request, "databases/detail.html", context)


@require_http_methods(["GET", "POST"])
@role_required(Role.ENGINEER)
def register(request: Request) -> HttpResponse:
    form = ManagedDatabaseForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            db = registry.register(request.user, form.save(commit=False))
        except registry.NotAllowed as exc:
            return refuse(request, 403, "Not allowed with your role", str(exc))
        checks.request_check(request.user, db)
        if db.secret_is_bound:
            messages.success(request, f"Registered {db.name}; testing its connection now.")
        else:
            messages.warning(request, _unbound_message(db))
        return redirect(db)
    return render(request, "databases/form.html", {"form": form, "db": None})


@require_http_methods(["GET", "POST"])
@role_required(Role.ENGINEER)
def edit(request: Request, name: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    form = ManagedDatabaseForm(request.POST or None, instance=db, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            db = registry.update(request.user, form.save(commit=False))
        except registry.NotAllowed as exc:
            return refuse(request, 403, "Not allowed with your role", str(exc))
        if db.secret_is_bound:
            messages.success(request, f"Saved {db.name}.")
        else:
            messages.warning(request, _unbound_message(db))
        return redirect(db)
    return render(request, "databases/form.html", {"form": form, "db": db})


@require_POST
@role_required(Role.LEAD)
def confirm_secret(request: Request, name: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    try:
        registry.confirm_secret(request.user, db)
    except registry.NotAllowed as exc:
        return refuse(request, 403, "Not allowed with your role", str(exc))
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect(db)
    messages.success(request, f"The password of {db.name} may now be sent to {pg.target(db.dsn)}.")
    checks.request_check(request.user, db)
    return redirect(db)


def _unbound_message(db: ManagedDatabase) -> str:
    role = registry.connection_role(db).label
    return (
        f"Saved {db.name}, but its password will not be sent until a {role} confirms where it "
        "goes (on this page)."
    )


@require_POST
@role_required(Role.ENGINEER)
def test_connection(request: Request, name: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    check = checks.request_check(request.user, db)
    if request.htmx:
        return render(request, "databases/_check.html", {"db": db, "check": check})
    return redirect(db)


@require_GET
@role_required(Role.VIEWER)
def check_status(request: Request, name: str, check_id: int) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    check = get_object_or_404(db.checks, pk=check_id)
    response = render(request, "databases/_check.html", {"db": db, "check": check})
    if check.is_done and request.htmx:
        response.status_code = HttpResponseStopPolling.status_code
    return response
