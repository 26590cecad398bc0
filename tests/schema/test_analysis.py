"""dashboard.schema.analysis: each revision's analysis stored in Runway's database by what it
depends on, read back by any process, pruned by age; sizes and acceptances applied on top."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from helpers import checked, linear, make_database, make_user, write_revision

from dashboard.lib import alembic
from dashboard.schema import analysis, risk_cache
from dashboard.schema.models import RevisionAnalysis, RiskAcceptance

pytestmark = pytest.mark.django_db


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of every revision rendered."""
    seen: list[str] = []
    real = alembic.render_offline

    def counting(tree: alembic.ScriptTree, revisions: Any, **kwargs: Any) -> Any:
        revisions = list(revisions)
        seen.extend(rev.id for rev in revisions)
        return real(tree, revisions, **kwargs)

    monkeypatch.setattr(alembic, "render_offline", counting)
    return seen


def another_process() -> None:
    """What a web process on another host starts with: nothing read in this request."""
    analysis.STORE.forget()


@pytest.fixture(autouse=True)
def fresh_memo() -> None:
    another_process()  # as every request and task starts


@pytest.fixture
def chain(tmp_path: Path) -> Any:
    """A database at 0001 of a five-revision chain: 0002-0005 pending."""
    linear(tmp_path, 5)
    db = make_database(script_location=str(tmp_path))
    checked(db, "0001")
    return db


def test_the_first_read_analyses_and_stores_each_revision(chain: Any, renders: list[str]) -> None:
    reports = analysis.reports_for(chain, ["0002", "0003", "0004", "0005"])

    assert renders == ["0002", "0003", "0004", "0005"]
    assert [r.revision for r in reports] == ["0002", "0003", "0004", "0005"]
    assert sorted(RevisionAnalysis.objects.values_list("revision", flat=True)) == [
        "0002",
        "0003",
        "0004",
        "0005",
    ]


def test_another_process_reads_the_stored_analysis_in_one_query(
    chain: Any, renders: list[str], django_assert_num_queries: Any
) -> None:
    pending = ["0002", "0003", "0004", "0005"]
    first = [r.to_json() for r in analysis.reports_for(chain, pending)]
    renders.clear()
    another_process()

    # The last good check, the acceptances, the stored analyses.
    with django_assert_num_queries(3):
        again = analysis.reports_for(chain, pending)

    assert renders == []
    assert [r.to_json() for r in again] == first


def test_within_one_request_asking_twice_reads_the_store_once(
    chain: Any, django_assert_num_queries: Any
) -> None:
    pending = ["0002", "0003", "0004", "0005"]
    analysis.reports_for(chain, pending)
    another_process()
    analysis.reports_for(chain, pending)

    with django_assert_num_queries(2):  # the check and the acceptances; no store read
        analysis.pinned_hash(chain, pending)


def test_editing_a_revision_file_analyses_it_and_its_descendants_only(
    chain: Any, renders: list[str], tmp_path: Path
) -> None:
    pending = ["0002", "0003", "0004", "0005"]
    analysis.reports_for(chain, pending)
    renders.clear()
    another_process()

    path = tmp_path / "versions" / "0003_step.py"
    path.write_text(path.read_text().replace("op.create_table('t')", "op.drop_table('t')"))
    reports = {r.revision: r for r in analysis.reports_for(chain, pending)}

    assert renders == ["0003", "0004", "0005"]
    assert "DROP TABLE t" in reports["0003"].sql
    assert RevisionAnalysis.objects.count() == 7  # the old keys stay until they are pruned


def test_a_changed_rules_hash_analyses_every_revision_again(
    chain: Any, renders: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pending = ["0002", "0003", "0004", "0005"]
    analysis.reports_for(chain, pending)
    renders.clear()
    another_process()

    monkeypatch.setattr(risk_cache, "runway_version", lambda: "the rules changed")
    analysis.reports_for(chain, pending)

    assert renders == pending


def test_an_acceptance_and_new_sizes_apply_without_analysing_again(
    tmp_path: Path, renders: list[str]
) -> None:
    write_revision(tmp_path, "a1", None)
    (tmp_path / "versions" / "b1_index.py").write_text(
        "from alembic import op\n\nrevision = 'b1'\ndown_revision = 'a1'\n\n\n"
        "def upgrade():\n    op.create_index('ix_users_email', 'users', ['email'])\n"
    )
    db = make_database(script_location=str(tmp_path))
    check = checked(db, "a1")
    assert analysis.reports_for(db, ["b1"])[0].grade == "high"
    renders.clear()

    another_process()
    check.table_sizes = {"users": [120, 16384]}
    check.save()
    assert analysis.reports_for(db, ["b1"])[0].grade == "medium"
    another_process()
    RiskAcceptance.objects.create(
        database=db,
        revision="b1",
        rule="create-index-blocking",
        comment="quiet hours",
        accepted_by=make_user("lea", "lead"),
    )
    assert analysis.reports_for(db, ["b1"])[0].grade == "low"
    assert renders == []


def test_two_databases_on_the_same_scripts_share_the_stored_analysis(
    chain: Any, renders: list[str], tmp_path: Path
) -> None:
    twin = make_database(name="twin", script_location=str(tmp_path))
    checked(twin, "0001")
    analysis.reports_for(chain, ["0002", "0003"])
    renders.clear()
    another_process()

    analysis.reports_for(twin, ["0002", "0003"])

    assert renders == []


def test_rows_unused_for_the_retention_are_pruned_when_new_ones_are_stored(
    chain: Any, tmp_path: Path
) -> None:
    old = timezone.now() - RevisionAnalysis.RETENTION - timedelta(hours=1)
    RevisionAnalysis.objects.create(
        key="0" * 64, revision="gone", report=b"", schema=b"", used_at=old
    )
    recent = timezone.now() - RevisionAnalysis.RETENTION + timedelta(days=1)
    RevisionAnalysis.objects.create(
        key="1" * 64, revision="kept", report=b"", schema=b"", used_at=recent
    )

    analysis.reports_for(chain, ["0002"])

    assert set(RevisionAnalysis.objects.values_list("revision", flat=True)) == {"kept", "0002"}


def test_reading_a_row_refreshes_when_it_was_used_at_most_once_a_day(
    chain: Any, django_assert_num_queries: Any
) -> None:
    analysis.reports_for(chain, ["0002"])
    two_days_ago = timezone.now() - timedelta(days=2)
    RevisionAnalysis.objects.update(used_at=two_days_ago)
    another_process()

    with django_assert_num_queries(4):  # check, acceptances, read, refresh
        analysis.reports_for(chain, ["0002"])
    another_process()
    with django_assert_num_queries(3):  # refreshed today: a read only
        analysis.reports_for(chain, ["0002"])

    assert RevisionAnalysis.objects.get().used_at > two_days_ago + timedelta(days=1)


def test_a_request_forgets_what_the_previous_one_read(
    chain: Any, client: Any, viewer: Any, django_assert_num_queries: Any
) -> None:
    from django.urls import reverse

    client.force_login(viewer)
    url = reverse("schema-history", args=[chain.name])
    client.get(url)
    RevisionAnalysis.objects.all().delete()  # as another host's pruning would

    body = client.get(url).content.decode()  # analysed again, not served from memory

    assert body.count("data-grade=") == 4
    assert RevisionAnalysis.objects.count() == 4
