from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from dashboard.accounts.roles import Role, role_required
from dashboard.databases.models import ManagedDatabase
from dashboard.schema.graph import draw
from dashboard.schema.status import last_good_check, status_of


@require_GET
@role_required(Role.VIEWER)
def history(request: HttpRequest, name: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    check = last_good_check(db)
    status = status_of(db, check)
    data = status.history.to_json() if status.history else None
    context = {
        "db": db,
        "check": check,
        "latest": db.latest_check(),
        "status": status,
        "data": data,
        "rows": draw(data["revisions"]) if data else [],
        "nav": "overview",
    }
    return render(request, "schema/history.html", context)
