"""What ``manage.py lint_migrations`` prints for CI: SARIF 2.1.0 and GitHub Actions commands.

Plain functions over :class:`~dashboard.schema.risk.RevisionReport`: no Django, no I/O. The
caller says where each revision file is (``paths``: revision id -> path relative to ``root``,
with ``/`` separators); every finding points at the line of the ``op.*`` call that produced it,
or line 1 when that is unknown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dashboard.schema.risk import Finding, RevisionReport

__all__ = [
    "LEVELS",
    "SARIF_SCHEMA",
    "escape_data",
    "escape_property",
    "github",
    "github_warning",
    "sarif",
    "workflow_command",
]

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SRCROOT = "%SRCROOT%"
LEVELS = {"note": "note", "medium": "warning", "high": "error"}  # severity -> SARIF level
COMMANDS = {"medium": "warning", "high": "error"}  # severity -> GitHub workflow command


# --- SARIF ---


def sarif(
    reports: Sequence[RevisionReport],
    paths: Mapping[str, str],
    *,
    root: Path,
    problems: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """One SARIF run: a result per finding (notes included, as level "note"; accepted ones
    carry a suppression), the rules that fired, and ``problems`` ((message, path) of the
    script folder) as tool notifications. URIs are relative to ``root`` (``%SRCROOT%``)."""
    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    results = []
    for report in reports:
        for finding in report.findings:
            if finding.rule not in index:
                index[finding.rule] = len(rules)
                rules.append(_rule(finding))
            results.append(_result(report, finding, paths[report.revision], index[finding.rule]))
    notifications = [
        {
            "level": "warning",
            "message": {"text": message},
            "locations": [_location(path, None)] if path else [],
        }
        for message, path in problems
    ]
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "Runway", "rules": rules}},
        "originalUriBaseIds": {SRCROOT: {"uri": root.as_uri().rstrip("/") + "/"}},
        "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": notifications}],
        "results": results,
    }
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}


def _rule(finding: Finding) -> dict[str, Any]:
    title = finding.rule.replace("-", " ").capitalize()
    if finding.source == "squawk":
        title += " (squawk)"
    return {
        "id": finding.rule,
        "shortDescription": {"text": title},
        "help": {"text": finding.safe_way or finding.message},
        "properties": {"source": finding.source},
    }


def _result(report: RevisionReport, f: Finding, path: str, rule_index: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": f.rule,
        "ruleIndex": rule_index,
        "level": LEVELS[f.severity],
        "message": {"text": f"Revision {report.revision} ({report.grade}): {f.message}"},
        "locations": [_location(path, f.line)],
        "properties": {
            "revision": report.revision,
            "grade": report.grade,
            "severity": f.severity,
            "source": f.source,
            "table": f.table,
            "lock": f.lock,
            "tableSize": f.table_size,
            "statement": f.statement,
            "squawkRules": list(f.squawk_rules),
        },
    }
    if f.accepted:
        result["suppressions"] = [
            {
                "kind": "inSource" if f.accepted.get("source") == "inline" else "external",
                "status": "accepted",
                "justification": f.accepted.get("comment", ""),
                "properties": {"by": f.accepted.get("by", "")},
            }
        ]
    return result


def _location(path: str, line: int | None) -> dict[str, Any]:
    return {
        "physicalLocation": {
            "artifactLocation": {"uri": quote(path), "uriBaseId": SRCROOT},
            "region": {"startLine": line or 1},
        }
    }


# --- GitHub Actions workflow commands ---


def github(reports: Sequence[RevisionReport], paths: Mapping[str, str]) -> list[str]:
    """One annotation per graded finding (``error`` for high, ``warning`` for medium), a
    ``notice`` per accepted one, none for notes; then a plain summary line."""
    lines = []
    for report in reports:
        path = paths[report.revision]
        for f in report.findings:
            if f.accepted:
                command, title = "notice", f"{f.rule} (accepted)"
                text = (
                    f"{report.revision}: {f.severity} {f.rule}, accepted by "
                    f"{f.accepted.get('by', '')}: {f.accepted.get('comment', '')}"
                )
            elif f.severity in COMMANDS:
                command, title = COMMANDS[f.severity], f.rule
                text = f"{report.revision} ({report.grade}): {f.message}"
                if f.safe_way:
                    text += f"\nSafe way: {f.safe_way}"
            else:
                continue
            lines.append(
                workflow_command(command, text, file=path, line=str(f.line or 1), title=title)
            )
    counts = {g: sum(1 for r in reports if r.grade == g) for g in ("high", "medium", "low")}
    lines.append(
        f"Runway: {len(reports)} revision{'s' if len(reports) != 1 else ''}: "
        f"{counts['high']} high, {counts['medium']} medium, {counts['low']} low"
    )
    return lines


def github_warning(message: str, path: str | None) -> str:
    """A script-folder problem as a warning annotation."""
    props = {"file": path} if path else {}
    return workflow_command("warning", message, title="Alembic scripts", **props)


def workflow_command(command: str, message: str, **properties: str) -> str:
    """``::command k=v,...::message``, escaped as the runner reads it back."""
    props = ",".join(f"{k}={escape_property(v)}" for k, v in properties.items())
    return f"::{command}{' ' + props if props else ''}::{escape_data(message)}"


def escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")
