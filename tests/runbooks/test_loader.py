"""The runbook library loads; a bad file is refused with its name, the step and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbooks.actions import REGISTRY
from runbooks.loader import RunbookError, load_library, load_text

LIBRARY = Path(__file__).resolve().parents[2] / "runbooks" / "library"
GOOD = """
id: tiny
title: Tiny
phases:
  - id: one
    title: One
    steps:
      - id: look
        check: Look at it
      - id: backup
        action: backup.create
        title: Back up
      - id: ok
        approval: A lead approves
        role: lead
"""


def load(text: str):
    return load_text(text, "tiny.yaml", REGISTRY.keys())


def test_the_library_loads_with_every_runbook_the_issue_names():
    books = load_library(LIBRARY, REGISTRY.keys())
    assert set(books) >= {
        "production-deployment",
        "failed-migration-rollback",
        "data-corruption-recovery",
        "complete-database-loss",
        "blue-green-switch",
        "large-data-migration",
    }


def test_production_deployment_has_the_seeds_four_phases_gates_and_validation():
    book = load_library(LIBRARY, REGISTRY.keys())["production-deployment"]
    assert [p.id for p in book.phases] == [
        "preparation",
        "pre-deployment",
        "execution",
        "post-deployment",
    ]
    actions = book.actions
    assert actions.index("backup.create") < actions.index("backup.validate")
    assert actions.index("gates.preflight") < actions.index("schema.upgrade")
    assert "integrity.verify" in actions
    approvals = [s for p in book.phases for s in p.steps if s.kind == "approval"]
    assert approvals and approvals[0].role == "lead" and approvals[0].four_eyes
    post = [s.title for s in book.phases[3].steps]
    assert "User authentication working" in post and "Payment processing operational" in post


def test_every_action_in_the_library_is_registered():
    for book in load_library(LIBRARY, REGISTRY.keys()).values():
        assert all(name in REGISTRY for name in book.actions)


def test_a_good_file_loads_with_its_steps():
    book = load(GOOD)
    kinds = [s.kind for s in book.phases[0].steps]
    assert kinds == ["check", "action", "approval"]
    assert book.phases[0].steps[2].count == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("action: backup.create", "action: backup.craete"),
            "tiny.yaml: phase one, step backup: unknown action 'backup.craete'",
        ),
        (("        role: lead\n", ""), "tiny.yaml: phase one, step ok: an approval needs a role"),
        (("role: lead", "role: boss"), "step ok: unknown role 'boss'"),
        (("id: backup", "id: look"), "tiny.yaml: phase one, step look: duplicate step id 'look'"),
        (
            ("check: Look at it", "check: Look at it\n        action: backup.create"),
            "step look: a step must have exactly one of check, action or approval "
            "(it has check, action)",
        ),
        (("title: Back up", "titel: Back up"), "step backup: unknown key titel"),
        (
            ("role: lead", "role: lead\n        count: 0"),
            "step ok: count must be a whole number from 1 to 10",
        ),
        (
            ("id: tiny", "id: Tiny Book"),
            "tiny.yaml: the runbook's id 'Tiny Book' must be lower-case",
        ),
        (("    steps:", "    stepz:"), "tiny.yaml: phase one: unknown key stepz"),
        (("id: look", "idd: look"), "tiny.yaml: phase one, step #1: the step's id is missing"),
    ],
)
def test_a_bad_file_is_refused_naming_file_step_and_problem(change, message):
    old, new = change
    assert old in GOOD
    with pytest.raises(RunbookError) as caught:
        load(GOOD.replace(old, new, 1))
    assert message in str(caught.value)


def test_broken_yaml_names_the_line():
    with pytest.raises(RunbookError, match=r"tiny.yaml: not valid YAML at line \d+"):
        load("id: x\nphases: [\n  - id: y\n")


def test_not_a_mapping_and_no_phases_are_refused():
    with pytest.raises(RunbookError, match="must hold a mapping"):
        load("- just\n- a list\n")
    with pytest.raises(RunbookError, match="phases must be a non-empty list"):
        load("id: x\ntitle: X\nphases: []\n")


def test_two_files_with_one_id_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD)
    with pytest.raises(
        RunbookError, match="b.yaml: duplicate runbook id 'tiny' \\(also in a.yaml\\)"
    ):
        load_library(tmp_path, REGISTRY.keys())


def test_check_runbooks_command_reports_the_library_and_a_bad_file(tmp_path, capsys):
    from django.core.management import CommandError, call_command

    call_command("check_runbooks")
    assert "production-deployment.yaml" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("backup.create", "backup.nope"))
    with pytest.raises(CommandError, match="bad.yaml: phase one, step backup: unknown action"):
        call_command("check_runbooks", str(bad))
