"""Every view of Runway checks the role on the server: each URL, each role, one table.

A new URL that is not in ACCESS fails `test_every_url_is_in_the_access_table`, so no view
ships without its role being decided and tested here.
"""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from helpers import make_database

RANK = {"anonymous": 0, "outsider": 0, "viewer": 1, "engineer": 2, "lead": 3, "admin_user": 4}
NEEDED = {"viewer": 1, "engineer": 2, "lead": 3, "admin": 4}

# url name -> (method, role needed, kwargs builder)
ACCESS: dict[str, tuple[str, str]] = {
    "overview": ("GET", "viewer"),
    "audit-events": ("GET", "viewer"),
    "audit-export-csv": ("GET", "viewer"),
    "audit-export-json": ("GET", "viewer"),
    "audit-export-pdf": ("GET", "viewer"),
    "database-register": ("GET", "engineer"),
    "database-detail": ("GET", "viewer"),
    "database-edit": ("GET", "engineer"),
    "database-test": ("POST", "engineer"),
    # A lead confirms on staging; the table's database is production, where it takes an admin.
    "database-confirm-secret": ("POST", "admin"),
    "database-check": ("GET", "viewer"),
    "schema-history": ("GET", "viewer"),
    "schema-revision": ("GET", "viewer"),
    "schema-accept": ("POST", "lead"),
    "schema-preflight": ("GET", "viewer"),
    "schema-run-gates": ("POST", "engineer"),
    "schema-gate-run": ("GET", "viewer"),
    "schema-rehearse": ("POST", "engineer"),
    "schema-rehearsal": ("GET", "viewer"),
    "backup-status": ("GET", "viewer"),
    "backup-detail": ("GET", "viewer"),
    "backup-run": ("POST", "engineer"),
    "backup-validate": ("POST", "engineer"),
    "backup-policy": ("GET", "lead"),
    "runs": ("GET", "viewer"),
    "run-start": ("GET", "engineer"),
    "run-detail": ("GET", "viewer"),
    "run-report": ("GET", "viewer"),
    "run-tick": ("POST", "engineer"),
    "run-retry": ("POST", "engineer"),
    "run-abort": ("POST", "engineer"),
    "run-step-abort": ("POST", "engineer"),
    "run-decide": ("POST", "lead"),
    "run-cancel-rollback": ("POST", "lead"),
    "run-review": ("GET", "viewer"),
    "run-deploy": ("POST", "engineer"),
    "run-amend": ("POST", "engineer"),
    "run-request-review": ("POST", "engineer"),
    "run-comment": ("POST", "engineer"),
    # Any role chooses its own; a database's channels are read by all, changed by a lead (the
    # POST to the page: tests/notify/test_views.py); global ones by an admin.
    "notify-preferences": ("GET", "viewer"),
    "notify-channels": ("GET", "viewer"),
    "notify-global-channels": ("GET", "viewer"),
    "notify-channel-remove": ("POST", "lead"),
    "notify-channel-test": ("POST", "lead"),
    "triggers": ("GET", "viewer"),
    # An engineer changes a staging database's rules; the table's database is production.
    "triggers-edit": ("POST", "lead"),
}
PUBLIC = {"login", "logout"}


def _names(resolver: URLResolver, prefix: str = "") -> set[str]:
    names: set[str] = set()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            if entry.app_name == "admin":
                continue  # Django's admin: staff only, tested in tests/databases/test_admin.py
            names |= _names(entry)
        elif isinstance(entry, URLPattern) and entry.name:
            names.add(entry.name)
    return names


def test_every_url_is_in_the_access_table():
    unknown = _names(get_resolver()) - set(ACCESS) - PUBLIC
    assert not unknown, f"decide and test the role for: {sorted(unknown)}"


def _url(name: str) -> str:
    from django.contrib.auth.models import User

    from dashboard.databases.models import ConnectionCheck, ManagedDatabase

    db = ManagedDatabase.objects.first() or make_database()
    kwargs: dict[str, object] = {}
    if name.startswith(("database-", "schema-", "backup-")) and name != "database-register":
        kwargs["name"] = db.name
    if name in ("backup-detail", "backup-validate"):
        from dashboard.backups.models import Backup

        kwargs["backup_id"] = Backup.objects.create(database=db, state="succeeded").pk
    if name in ("schema-revision", "schema-accept"):
        kwargs["rev"] = "0017"
    if name == "schema-gate-run":
        from dashboard.schema.models import GateRun

        kwargs["run_id"] = GateRun.objects.create(database=db).pk
    if name == "schema-rehearsal":
        from dashboard.schema.models import Rehearsal

        kwargs["rehearsal_id"] = Rehearsal.objects.create(database=db).pk
    if name.startswith("run-") and name != "run-start":
        from runbooks.models import Run, StepRun

        starter = User.objects.get_or_create(username="starter")[0]
        run = Run.objects.create(
            runbook_id="x",
            runbook_title="X",
            runbook={"phases": [{"id": "p", "title": "P", "steps": []}]},
            database=db,
            started_by=starter,
        )
        kwargs.update(name=db.name, run_id=run.pk)
        if name in ("run-tick", "run-retry", "run-decide", "run-step-abort"):
            StepRun.objects.create(run=run, phase_index=0, position=0, step_id="s", kind="check")
            kwargs["step_id"] = "s"
        if name == "run-report":
            kwargs["fmt"] = "json"
    if name == "notify-channels":
        kwargs["name"] = db.name
    if name in ("notify-channel-remove", "notify-channel-test"):
        from dashboard.notify.models import Channel

        kwargs["channel_id"] = Channel.objects.create(
            database=db, name="ops", kind="email", addresses=["ops@example.com"], events=[]
        ).pk
    if name in ("triggers", "triggers-edit"):
        kwargs["name"] = db.name
    if name == "triggers-edit":
        from dashboard.triggers.rules import rules_of

        kwargs["rule_id"] = rules_of(db)[0].pk
    if name == "database-check":
        kwargs["check_id"] = ConnectionCheck.objects.create(database=db).pk
    return reverse(name, kwargs=kwargs)


@pytest.mark.parametrize("name", sorted(ACCESS))
@pytest.mark.parametrize("who", sorted(RANK))
def test_each_role_gets_exactly_what_it_may(client, db, request, name, who):
    method, needed = ACCESS[name]
    if who != "anonymous":
        client.force_login(request.getfixturevalue(who))
    url = _url(name)
    response = client.get(url) if method == "GET" else client.post(url)
    if who == "anonymous":
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    elif RANK[who] >= NEEDED[needed]:
        # 400: the role passed and the (empty) form was refused on its content.
        assert response.status_code in (200, 302, 400), response.status_code
    else:
        assert response.status_code == 403
