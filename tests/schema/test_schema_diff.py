"""The schema change as a diff: real pg_dump output of databases on the test cluster, changed
the ways revisions change them, described (schema_diff.normalize) and compared object by
object; a real rehearsal stores the copy's schema before and after its revisions, and its page
(in Django's client and in Chromium) shows the diff."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.test import Client
from django.urls import reverse
from helpers import alembic_project, log_in

from dashboard.jobs import lifecycle as jobs
from dashboard.lib import pg
from dashboard.schema import rehearsal, schema_diff
from dashboard.schema.models import Rehearsal
from dashboard.schema.schema_diff import DiffLine
from devstack.cluster import Cluster

SCHEMA = """
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('0016');
CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL, email text);
COMMENT ON COLUMN users.email IS 'where we write';
CREATE INDEX ix_users_name ON users (name);
CREATE TABLE plans (id serial PRIMARY KEY, title text);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  -- a comment inside the body is part of the function
  SET LOCAL search_path = public;
  RETURN NEW;
END;
$body$;
"""

CHANGE = """
ALTER TABLE users ADD COLUMN plan_id integer REFERENCES plans (id);
CREATE UNIQUE INDEX ix_users_email ON users (email);
DROP INDEX ix_users_name;
CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);
"""


@pytest.fixture
def database(pg_cluster: Cluster) -> Iterator[str]:
    name = f"diff_{uuid.uuid4().hex[:10]}"
    pg_cluster.create_database(name)
    run(pg_cluster, name, SCHEMA)
    yield name
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(cluster: Cluster, name: str, statements: str) -> None:
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
        conn.execute(statements)  # type: ignore[arg-type]


def dump(cluster: Cluster, name: str) -> str:
    """The raw dump, as Runway takes it (through dashboard.lib.pg)."""
    return pg.schema_dump(
        cluster.dsn(name, password=""),
        cluster.password,
        server_version=cluster_version(cluster),
        exclude_tables=rehearsal.VERSION_TABLES,
    )


def cluster_version(cluster: Cluster) -> int:
    with psycopg.connect(cluster.dsn()) as conn:
        return int(conn.info.server_version)


def described(cluster: Cluster, name: str) -> str:
    return schema_diff.normalize(dump(cluster, name))


def objects(lines: list[DiffLine]) -> dict[str, str]:
    return {line.text: line.change for line in lines if line.kind == "object"}


def lines_of(lines: list[DiffLine], heading: str) -> list[tuple[str, str]]:
    """The (kind, text) lines under one object heading."""
    start = next(
        i for i, line in enumerate(lines) if line.kind == "object" and line.text == heading
    )
    end = next((i for i in range(start + 1, len(lines)) if lines[i].kind == "object"), len(lines))
    return [(line.kind, line.text) for line in lines[start + 1 : end]]


# --- The description ---


def test_the_description_keeps_the_statements_and_drops_what_differs_between_two_dumps(
    pg_cluster: Cluster, database: str
) -> None:
    raw = dump(pg_cluster, database)
    assert "SET statement_timeout" in raw and "-- Dumped from database version" in raw
    text = schema_diff.normalize(raw)
    assert "CREATE TABLE public.users (" in text
    assert "-- Name: users; Type: TABLE; Schema: public\n" in text
    assert "Owner:" not in text and "Dumped" not in text and "\\restrict" not in text
    assert not [line for line in text.splitlines() if line.startswith("SET ")]
    assert "alembic_version" not in text and "0016" not in text
    # A function's body is kept whole: its comment and SET lines are its own.
    assert "  -- a comment inside the body is part of the function\n" in text
    assert "  SET LOCAL search_path = public;\n" in text
    assert "COMMENT ON COLUMN public.users.email IS 'where we write';" in text
    # The same schema dumped again reads the same (pg_dump 17.6+ would differ in its key).
    again = described(pg_cluster, database)
    assert again == text
    assert schema_diff.schema_diff(text, again) == []
    assert schema_diff.compare(text, again).summary == "No schema change."


def test_a_changed_schema_is_diffed_object_by_object(pg_cluster: Cluster, database: str) -> None:
    before = described(pg_cluster, database)
    run(pg_cluster, database, CHANGE)
    after = described(pg_cluster, database)
    diff = schema_diff.schema_diff(before, after)
    assert objects(diff) == {
        "TABLE public.users": "changed",
        "TABLE public.notes": "added",
        "SEQUENCE public.notes_id_seq": "added",
        "CONSTRAINT notes_pkey ON public.notes": "added",
        "INDEX public.ix_users_email": "added",
        "INDEX public.ix_users_name": "removed",
        "FK CONSTRAINT users_plan_id_fkey ON public.users": "added",
    }
    users = lines_of(diff, "TABLE public.users")
    assert ("added", "    plan_id integer") in users
    assert ("removed", "    email text") in users and ("added", "    email text,") in users
    assert ("context", "    name text NOT NULL,") in users
    # Unchanged objects are not shown; the table's unchanged comment is left out as a gap.
    assert "TABLE public.plans" not in objects(diff)
    assert ("gap", "…") in users
    assert lines_of(diff, "INDEX public.ix_users_name") == [
        ("removed", "CREATE INDEX ix_users_name ON public.users USING btree (name);")
    ]
    assert lines_of(diff, "TABLE public.notes")[0] == ("added", "CREATE TABLE public.notes (")
    assert schema_diff.summarize(diff) == (
        "1 table changed, 1 table added, 1 index added, 1 index removed, "
        "1 constraint added, 1 foreign key added, 1 sequence added"
    )
    # The other way round, everything added is removed.
    back = schema_diff.schema_diff(after, before)
    assert objects(back)["TABLE public.notes"] == "removed"
    assert objects(back)["INDEX public.ix_users_name"] == "added"


def test_a_removed_object_is_listed_where_it_stood() -> None:
    def block(kind: str, name: str, sql: str) -> str:
        return f"-- Name: {name}; Type: {kind}; Schema: public\n{sql}\n\n"

    a = block("TABLE", "a", "CREATE TABLE public.a ();")
    b = block("TABLE", "b", "CREATE TABLE public.b ();")
    c = block("TABLE", "c", "CREATE TABLE public.c ();")
    diff = schema_diff.schema_diff(a + b + c, a + c + block("VIEW", "v", "CREATE VIEW public.v;"))
    assert [(d.text, d.change) for d in diff if d.kind == "object"] == [
        ("TABLE public.b", "removed"),
        ("VIEW public.v", "added"),
    ]
    assert schema_diff.summarize(diff) == "1 table removed, 1 view added"
    two = [DiffLine("object", f"INDEX public.i{n}", "added", "index") for n in range(2)]
    assert schema_diff.summarize([*two, diff[0]]) == "1 table removed, 2 indexes added"


def test_a_description_over_the_limit_is_cut_at_a_line_and_says_so() -> None:
    text = "".join(
        f"-- Name: t{i}; Type: TABLE; Schema: public\nCREATE TABLE t{i} ();\n\n" for i in range(200)
    )
    assert schema_diff.bounded(text) == text
    cut = schema_diff.bounded(text, limit=1000)
    assert len(cut.encode()) < 1000 + 200
    kept, last = cut.rstrip("\n").rsplit("\n", 1)
    assert text.startswith(kept + "\n")
    assert last.startswith("-- Runway: truncated here: the schema is ")
    assert f"{len(text.encode()):,} bytes" in last
    assert schema_diff.LIMIT_BYTES == 2 * 1024 * 1024


# --- On a real rehearsal ---


@pytest.mark.django_db
def test_a_rehearsal_stores_the_copys_schema_before_and_after_its_revisions(
    checked_target: Any, owner_may_create_databases: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="dashboard.schema.rehearsal")
    done = jobs.run(
        "rehearsal", rehearsal.request_rehearsal(None, checked_target, enqueue=False).pk
    )
    assert isinstance(done, Rehearsal) and done.state == "succeeded", done and done.error
    done = Rehearsal.objects.get(pk=done.pk)
    assert "CREATE TABLE public.users (" in done.schema_before
    assert (
        "new_feature_flag" not in done.schema_before and "ix_users_email" not in done.schema_before
    )
    assert "new_feature_flag" in done.schema_after and "email_new" in done.schema_after
    assert "CREATE INDEX ix_users_email ON public.users" in done.schema_after
    assert "alembic_version" not in done.schema_before + done.schema_after
    change = done.schema_change
    assert change is not None
    assert objects(change.lines) == {
        "TABLE public.users": "changed",
        "INDEX public.ix_users_email": "added",
    }
    added = [t for kind, t in lines_of(change.lines, "TABLE public.users") if kind == "added"]
    assert any(t.strip().startswith("new_feature_flag boolean") for t in added)
    assert any(t.strip().startswith("email_new character varying(500)") for t in added)
    assert change.summary == "1 table changed, 1 index added"
    reads = [r.getMessage() for r in caplog.records if "schema " in r.getMessage()]
    assert len(reads) == 2 and " read in " in reads[0], reads


@pytest.mark.django_db
def test_a_failed_rehearsal_stores_the_schema_its_failure_left(
    checked_target: Any, owner_may_create_databases: None, tmp_path: Path
) -> None:
    folder = alembic_project(
        tmp_path / "app",
        ("good", "0016", "op.execute('CREATE TABLE notes (id int)')"),
        ("bad", "good", "op.execute('SELECT 1/0')"),
    )
    checked_target.script_location = str(folder)
    checked_target.save()
    done = jobs.run(
        "rehearsal", rehearsal.request_rehearsal(None, checked_target, enqueue=False).pk
    )
    assert isinstance(done, Rehearsal) and done.state == "failed"
    done = Rehearsal.objects.get(pk=done.pk)
    assert "notes" not in done.schema_before
    assert "CREATE TABLE public.notes (" in done.schema_after  # "good" was committed
    assert done.schema_change is not None
    assert done.schema_change.summary == "1 table added"


@pytest.mark.django_db
def test_the_rehearsal_page_shows_the_diff(
    checked_target: Any, owner_may_create_databases: None, lead: Any
) -> None:
    done = jobs.run(
        "rehearsal", rehearsal.request_rehearsal(None, checked_target, enqueue=False).pk
    )
    assert isinstance(done, Rehearsal)
    client = Client()
    client.force_login(lead)
    html = client.get(
        reverse("schema-rehearsal", args=[checked_target.name, done.pk])
    ).content.decode()
    assert 'id="schema-diff-summary">1 table changed, 1 index added</p>' in html
    assert 'data-object="INDEX public.ix_users_email" data-change="added"' in html
    assert 'data-kind="added"><span class="sd-sign">+</span>    new_feature_flag boolean' in html


@pytest.mark.django_db
def test_a_rehearsal_without_stored_schemas_shows_no_diff(checked_target: Any, lead: Any) -> None:
    old = Rehearsal.objects.create(database=checked_target, state="succeeded", revisions=["0017"])
    assert old.schema_change is None
    client = Client()
    client.force_login(lead)
    html = client.get(
        reverse("schema-rehearsal", args=[checked_target.name, old.pk])
    ).content.decode()
    assert "data-schema-diff" not in html
    half = Rehearsal.objects.create(database=checked_target, schema_before="x", state="failed")
    assert half.schema_change is not None and half.schema_change.lines == []
    assert half.schema_change.summary == "The copy's schema after the revisions was not read."


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_diff_in_chromium_scrolls_inside_its_box(
    page: Any,
    live_server: Any,
    lead: Any,
    make_target: Callable[..., str],
    owner_may_create_databases: None,
    artifacts: Path,
) -> None:
    from helpers import checked, make_database

    db = make_database(dsn=make_target())
    checked(db, "0016")
    done = jobs.run("rehearsal", rehearsal.request_rehearsal(None, db, enqueue=False).pk)
    assert isinstance(done, Rehearsal) and done.state == "succeeded", done and done.error
    # A long line (a wide CHECK) must scroll inside the box, not widen the page.
    wide = done.schema_after.replace(
        "CREATE INDEX ix_users_email ON public.users USING btree (email);",
        "CREATE INDEX ix_users_email ON public.users USING btree (email) WHERE "
        + " OR ".join(f"email = 'someone{i}@example.org'" for i in range(12))
        + ";",
    )
    Rehearsal.objects.filter(pk=done.pk).update(schema_after=wide)
    page.set_viewport_size({"width": 1100, "height": 900})
    log_in(page, live_server, "leo")
    page.goto(live_server.url + reverse("schema-rehearsal", args=[db.name, done.pk]))
    assert page.locator("#schema-diff-summary").inner_text() == "1 table changed, 1 index added"
    assert page.locator(".sd-added").count() >= 3 and page.locator(".sd-removed").count() >= 1
    added = page.locator(".sd-added").first
    assert added.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(230, 246, 236)"
    widths = page.evaluate(
        "() => { const root = document.documentElement, box = document.querySelector('.sd-box');"
        " return [root.scrollWidth, root.clientWidth, box.scrollWidth, box.clientWidth]; }"
    )
    page_scroll, page_width, box_scroll, box_width = widths
    assert page_scroll <= page_width, widths  # no horizontal page overflow
    assert box_scroll > box_width, widths  # the long line scrolls inside the box
    time.sleep(0.2)
    page.screenshot(path=artifacts / "rehearsal-schema-diff.png", full_page=True)
