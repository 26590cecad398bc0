"""Runbooks as YAML: the schema, and a loader that refuses a bad file with a message naming the
file, the step and the problem.

A runbook is phases of steps; a phase opens when the one before it is complete, and completes when
its required steps are done. A step is one of:

    - id: review-pending                  # a person ticks it, with a note
      check: Review all pending migrations
      help: Read each revision's risk findings.
      required: true                      # the default
    - id: backup
      action: backup.create               # an automated action, by its registered name
      title: Create the pre-migration backup
    - id: lead-approval
      approval: A team lead approves the deployment
      role: lead                          # the role (or higher) that may approve
      count: 1                            # approvals needed (production: at least the setting)
      four_eyes: true                     # never the person who started the run (the default)

Pure: no Django; the action names it accepts are passed in.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
ROLES = ("viewer", "engineer", "lead", "admin")
KINDS = ("check", "action", "approval")
RUNBOOK_KEYS = {"id", "title", "description", "scenario", "needs_target", "automatic", "phases"}
PHASE_KEYS = {"id", "title", "when", "due", "steps"}
# A phase's due date relative to the run's planned deployment time: "-7d", "-4h", "0", "+24h".
DUE = re.compile(r"^([+-]?)(\d{1,4})([dhm]?)$")
DUE_UNITS = {"d": 86400, "h": 3600, "m": 60, "": 0}
MAX_DUE_SECONDS = 365 * 86400
STEP_KEYS = {
    "check": {"id", "check", "help", "required"},
    "action": {"id", "action", "title", "help", "required"},
    "approval": {"id", "approval", "help", "role", "count", "four_eyes", "required"},
}
MAX_BYTES = 256 * 1024


class RunbookError(ValueError):
    """A runbook file that does not load; the message names the file, the step and the problem."""


@dataclass(frozen=True)
class Step:
    id: str
    kind: str  # check | action | approval
    title: str
    help: str = ""
    required: bool = True
    action: str = ""  # for kind == "action"
    role: str = ""  # for kind == "approval"
    count: int = 0
    four_eyes: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "help": self.help,
            "required": self.required,
            "action": self.action,
            "role": self.role,
            "count": self.count,
            "four_eyes": self.four_eyes,
        }


@dataclass(frozen=True)
class Phase:
    id: str
    title: str
    when: str = ""
    steps: tuple[Step, ...] = ()
    # Seconds from the run's planned deployment time (negative: before); None when not set.
    due_seconds: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "when": self.when,
            "due_seconds": self.due_seconds,
            "steps": [s.to_json() for s in self.steps],
        }


@dataclass(frozen=True)
class Runbook:
    id: str
    title: str
    description: str = ""
    scenario: str = ""
    needs_target: bool = False
    # Started by Runway for another run (a rollback), never from the Start page.
    automatic: bool = False
    phases: tuple[Phase, ...] = ()
    file: str = ""

    @property
    def actions(self) -> list[str]:
        return [s.action for p in self.phases for s in p.steps if s.kind == "action"]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "scenario": self.scenario,
            "needs_target": self.needs_target,
            "automatic": self.automatic,
            "phases": [p.to_json() for p in self.phases],
        }


@dataclass
class _Where:
    file: str
    phase: str = ""
    step: str = ""

    def fail(self, problem: str) -> RunbookError:
        place = self.file
        if self.phase:
            place += f": phase {self.phase}"
        if self.step:
            place += f", step {self.step}"
        return RunbookError(f"{place}: {problem}")


def load_text(text: str, file: str, actions: Collection[str]) -> Runbook:
    where = _Where(file)
    if len(text.encode()) > MAX_BYTES:
        raise where.fail(f"the file is larger than {MAX_BYTES // 1024} KiB")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise where.fail(f"not valid YAML{at}: {problem}") from None
    if not isinstance(data, Mapping):
        raise where.fail("the file must hold a mapping with id, title and phases")
    _no_unknown(where, data, RUNBOOK_KEYS, "runbook")
    rid = _ident(where, data.get("id"), "the runbook's id")
    title = _text(where, data.get("title"), "title")
    phases_raw = data.get("phases")
    if not isinstance(phases_raw, list) or not phases_raw:
        raise where.fail("phases must be a non-empty list")
    phases: list[Phase] = []
    phase_ids: set[str] = set()
    step_ids: set[str] = set()
    for number, raw in enumerate(phases_raw, 1):
        where.phase, where.step = f"#{number}", ""
        if not isinstance(raw, Mapping):
            raise where.fail("a phase must be a mapping with id, title and steps")
        pid = _ident(where, raw.get("id"), "the phase's id")
        where.phase = pid
        if pid in phase_ids:
            raise where.fail(f"duplicate phase id {pid!r}")
        phase_ids.add(pid)
        _no_unknown(where, raw, PHASE_KEYS, "phase")
        steps_raw = raw.get("steps")
        if not isinstance(steps_raw, list) or not steps_raw:
            raise where.fail("steps must be a non-empty list")
        steps = []
        for index, step_raw in enumerate(steps_raw, 1):
            where.step = f"#{index}"
            step = _step(where, step_raw, actions)
            if step.id in step_ids:
                raise where.fail(f"duplicate step id {step.id!r}")
            step_ids.add(step.id)
            steps.append(step)
        where.step = ""
        phases.append(
            Phase(
                id=pid,
                title=_text(where, raw.get("title"), "title"),
                when=_text(where, raw.get("when", ""), "when", required=False),
                steps=tuple(steps),
                due_seconds=_due(where, raw.get("due")),
            )
        )
    where.phase = where.step = ""
    return Runbook(
        id=rid,
        title=title,
        description=_text(where, data.get("description", ""), "description", required=False),
        scenario=_text(where, data.get("scenario", ""), "scenario", required=False),
        needs_target=_bool(where, data.get("needs_target", False), "needs_target"),
        automatic=_bool(where, data.get("automatic", False), "automatic"),
        phases=tuple(phases),
        file=file,
    )


def _step(where: _Where, raw: object, actions: Collection[str]) -> Step:
    if not isinstance(raw, Mapping):
        raise where.fail("a step must be a mapping with an id and one of check, action, approval")
    if "id" in raw:
        where.step = str(raw["id"])
    sid = _ident(where, raw.get("id"), "the step's id")
    kinds = [k for k in KINDS if k in raw]
    if len(kinds) != 1:
        raise where.fail(
            "a step must have exactly one of check, action or approval"
            + (f" (it has {', '.join(kinds)})" if kinds else "")
        )
    kind = kinds[0]
    _no_unknown(where, raw, STEP_KEYS[kind], f"{kind} step")
    required = _bool(where, raw.get("required", True), "required")
    help_text = _text(where, raw.get("help", ""), "help", required=False)
    if kind == "check":
        return Step(sid, kind, _text(where, raw["check"], "check"), help_text, required)
    if kind == "action":
        name = raw["action"]
        if not isinstance(name, str) or name not in actions:
            known = ", ".join(sorted(actions)) or "none"
            raise where.fail(f"unknown action {name!r} (known actions: {known})")
        title = _text(where, raw.get("title"), "title")
        return Step(sid, kind, title, help_text, required, action=name)
    if "role" not in raw:
        raise where.fail(f"an approval needs a role (one of {', '.join(ROLES[1:])})")
    role = raw["role"]
    if role not in ROLES[1:]:
        raise where.fail(f"unknown role {role!r}: use one of {', '.join(ROLES[1:])}")
    count = raw.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 10:
        raise where.fail(f"count must be a whole number from 1 to 10, not {count!r}")
    return Step(
        sid,
        kind,
        _text(where, raw["approval"], "approval"),
        help_text,
        required,
        role=role,
        count=count,
        four_eyes=_bool(where, raw.get("four_eyes", True), "four_eyes"),
    )


def _no_unknown(where: _Where, raw: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise where.fail(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in a {what} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )


def _ident(where: _Where, value: object, what: str) -> str:
    if value is None:
        raise where.fail(f"{what} is missing")
    if not isinstance(value, str) or not ID.match(value):
        raise where.fail(
            f"{what} {value!r} must be lower-case letters, digits and hyphens (at most 63)"
        )
    return value


def _text(where: _Where, value: object, what: str, *, required: bool = True) -> str:
    if value is None or value == "":
        if required:
            raise where.fail(f"{what} is missing")
        return ""
    if not isinstance(value, str):
        raise where.fail(f"{what} must be text, not {type(value).__name__}")
    return value.strip()


def _due(where: _Where, value: object) -> int | None:
    """``due: -4h`` (before the planned time), ``+24h`` (after), ``0``: seconds, or None."""
    if value is None:
        return None
    found = DUE.match(str(value).strip()) if isinstance(value, str | int) else None
    if found is None or (found.group(3) == "" and found.group(2) != "0"):
        raise where.fail(
            f"due must be an offset from the planned time like -7d, -4h, +30m or 0, not {value!r}"
        )
    sign, number, unit = found.groups()
    seconds = int(number) * DUE_UNITS[unit]
    if seconds > MAX_DUE_SECONDS:
        raise where.fail("due must be within a year of the planned time")
    return -seconds if sign == "-" else seconds


def _bool(where: _Where, value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise where.fail(f"{what} must be true or false, not {value!r}")
    return value


def load_file(path: Path, actions: Collection[str]) -> Runbook:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RunbookError(f"{path.name}: cannot be read: {exc}") from None
    return load_text(text, path.name, actions)


def load_library(folder: Path, actions: Collection[str]) -> dict[str, Runbook]:
    """Every ``*.yaml`` in the folder, by id; the first bad file raises."""
    books: dict[str, Runbook] = {}
    for path in sorted(folder.glob("*.yaml")):
        book = load_file(path, actions)
        if book.id in books:
            raise RunbookError(
                f"{path.name}: duplicate runbook id {book.id!r} (also in {books[book.id].file})"
            )
        books[book.id] = book
    return books
