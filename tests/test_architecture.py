"""The dependency rules import-linter cannot see (pyproject.toml holds the ones it can).

- Only ``dashboard/lib/gpg.py`` runs gpg (and gpgconf), only ``dashboard/lib/squawk.py`` runs
  squawk: no other module of the product names either program where a program is named (an
  argv list, ``shutil.which``, a path joined with ``/``, a module constant).
- Every Runway app in INSTALLED_APPS is in the contracts that list the domain apps, so a new
  app is held to the rules from its first commit.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
from django.conf import settings
from helpers import ROOT

PRODUCT = ("dashboard", "runbooks")
TOOLS = {
    "gpg": "dashboard/lib/gpg.py",
    "gpg2": "dashboard/lib/gpg.py",
    "gpgconf": "dashboard/lib/gpg.py",
    "squawk": "dashboard/lib/squawk.py",
}


def _program(node: ast.AST) -> str | None:
    """The program a string constant names (``gpg``, ``/usr/bin/gpg``), if it is one of TOOLS."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        name = node.value.strip().split(" ")[0].rsplit("/", 1)[-1]
        return name if name in TOOLS else None
    return None


def programs_named(source: str) -> list[tuple[str, int]]:
    """Each (program, line) where ``source`` names one of TOOLS as a program."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        candidates: list[ast.AST] = []
        if isinstance(node, ast.List | ast.Tuple):
            candidates = list(node.elts)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            candidates = [node.right]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "which"
        ):
            candidates = list(node.args)
        for candidate in candidates:
            program = _program(candidate)
            if program:
                found.append((program, candidate.lineno))
    for statement in tree.body:  # GPG = "gpg"
        if isinstance(statement, ast.Assign | ast.AnnAssign) and statement.value is not None:
            program = _program(statement.value)
            if program:
                found.append((program, statement.lineno))
    return found


def product_modules() -> list[Path]:
    return sorted(
        path
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.relative_to(ROOT).parts
    )


def test_only_each_tools_own_module_runs_it():
    outside = [
        f"{path.relative_to(ROOT)}:{line} runs {program} (only {TOOLS[program]} may)"
        for path in product_modules()
        for program, line in programs_named(path.read_text())
        if str(path.relative_to(ROOT)) != TOOLS[program]
    ]
    assert outside == []


@pytest.mark.parametrize(
    "module,programs",
    [("dashboard/lib/gpg.py", {"gpg", "gpgconf"}), ("dashboard/lib/squawk.py", {"squawk"})],
)
def test_the_check_sees_the_tools_own_modules_run_them(module, programs):
    assert {program for program, _ in programs_named((ROOT / module).read_text())} == programs


@pytest.mark.parametrize(
    "source",
    [
        'subprocess.run(["gpg", "--decrypt"])',
        'subprocess.Popen(("/usr/bin/squawk", "-"))',
        'shutil.which("gpgconf")',
        'Path(sys.executable).parent / "squawk"',
        'BINARY = "squawk"',
    ],
)
def test_the_check_catches_a_program_named_elsewhere(source):
    assert programs_named(source)


def test_a_label_is_not_a_program():
    assert programs_named('chain.start("gpg", start, explain)\nlog("squawk found")') == []


def test_every_runway_app_is_held_to_the_contracts():
    contracts = {
        contract["id"]: contract
        for contract in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
            "importlinter"
        ]["contracts"]
    }
    apps = {app for app in settings.INSTALLED_APPS if app.startswith(("dashboard.", "runbooks"))}
    assert set(contracts["domain-runbooks"]["source_modules"]) == apps - {"runbooks"}
    assert set(contracts["views"]["source_modules"]) == apps
    assert set(contracts["audit"]["forbidden_modules"]) == (apps - {"dashboard.audit"}) | {
        "devstack"
    }
