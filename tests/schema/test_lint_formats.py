"""dashboard.schema.lint_formats: SARIF and GitHub Actions commands from reports built by hand
(no rendering, no git)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dashboard.schema import lint_formats
from dashboard.schema.risk import Finding, RevisionReport

NASTY = "100% sure: a, b\r\nnext line"


def finding(rule: str, severity: str, **kwargs: Any) -> Finding:
    kwargs.setdefault("message", f"{rule} is risky.")
    kwargs.setdefault("safe_way", f"Do {rule} safely.")
    return Finding(
        rule=rule,
        source=kwargs.pop("source", "runway"),
        severity=severity,
        statement=kwargs.pop("statement", "SELECT 1"),
        statement_index=0,
        lock="SHARE",
        table="users",
        **kwargs,
    )


def report(*findings: Finding, revision: str = "0002", grade: str = "high") -> RevisionReport:
    return RevisionReport(
        revision=revision,
        down_revisions=["0001"],
        message="step",
        file=f"versions/{revision}_step.py",
        previewable=True,
        error="",
        sql="",
        statements=[],
        findings=list(findings),
        grade=grade,
        reasons=[],
        tables=["users"],
    )


PATHS = {"0002": "db/versions/0002_step.py"}


def test_data_escapes_percent_and_line_breaks() -> None:
    assert lint_formats.escape_data(NASTY) == "100%25 sure: a, b%0D%0Anext line"


def test_properties_also_escape_colons_and_commas() -> None:
    assert lint_formats.escape_property(NASTY) == "100%25 sure%3A a%2C b%0D%0Anext line"


def test_a_workflow_command_is_one_line_whatever_the_message_holds() -> None:
    line = lint_formats.workflow_command("error", NASTY, file="a,b:c.py", line="3", title=NASTY)

    assert line == (
        "::error file=a%2Cb%3Ac.py,line=3,title=100%25 sure%3A a%2C b%0D%0Anext line"
        "::100%25 sure: a, b%0D%0Anext line"
    )
    assert "\n" not in line and "\r" not in line


def test_github_annotates_high_as_error_medium_as_warning_and_skips_notes() -> None:
    lines = lint_formats.github(
        [
            report(
                finding("create-index-blocking", "high", line=24, message=NASTY),
                finding("set-not-null", "medium", line=None, safe_way=""),
                finding("require-lock-timeout", "note", line=24),
            )
        ],
        PATHS,
    )

    assert lines == [
        "::error file=db/versions/0002_step.py,line=24,title=create-index-blocking"
        "::0002 (high): 100%25 sure: a, b%0D%0Anext line%0ASafe way: Do create-index-blocking "
        "safely.",
        "::warning file=db/versions/0002_step.py,line=1,title=set-not-null"
        "::0002 (high): set-not-null is risky.",
        "Runway: 1 revision: 1 high, 0 medium, 0 low",
    ]


def test_github_shows_an_accepted_finding_as_a_notice_with_its_reason() -> None:
    accepted = {"by": "leo", "comment": "rehearsed, 40 s", "source": "lead"}
    [line, _] = lint_formats.github(
        [report(finding("data-migration", "high", line=9, accepted=accepted), grade="low")],
        PATHS,
    )

    assert line == (
        "::notice file=db/versions/0002_step.py,line=9,title=data-migration (accepted)"
        "::0002: high data-migration, accepted by leo: rehearsed, 40 s"
    )


def test_a_script_folder_problem_is_a_warning_on_its_file() -> None:
    assert lint_formats.github_warning("0003_x.py: syntax error (line 4)", "db/0003_x.py") == (
        "::warning title=Alembic scripts,file=db/0003_x.py::0003_x.py: syntax error (line 4)"
    )


def test_sarif_maps_severities_to_levels_and_acceptances_to_suppressions() -> None:
    log = lint_formats.sarif(
        [
            report(
                finding("create-index-blocking", "high", line=24),
                finding(
                    "data-migration",
                    "high",
                    line=30,
                    accepted={"by": "leo", "comment": "ok", "source": "lead"},
                ),
                finding(
                    "set-not-null",
                    "medium",
                    line=None,
                    accepted={"by": "file", "comment": "tiny", "source": "inline"},
                ),
                finding("prefer-identity", "note", line=5, source="squawk"),
            )
        ],
        PATHS,
        root=Path("/srv/app repo"),
        problems=[("0009_x.py: syntax error", "db/versions/0009_x.py")],
    )

    json.dumps(log)  # serialisable as it is
    [run] = log["runs"]
    assert run["originalUriBaseIds"] == {"%SRCROOT%": {"uri": "file:///srv/app%20repo/"}}
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == [
        "create-index-blocking",
        "data-migration",
        "set-not-null",
        "prefer-identity",
    ]
    assert run["tool"]["driver"]["rules"][3]["shortDescription"] == {
        "text": "Prefer identity (squawk)"
    }
    results = run["results"]
    assert [r["level"] for r in results] == ["error", "error", "warning", "note"]
    assert [r["locations"][0]["physicalLocation"]["region"]["startLine"] for r in results] == [
        24,
        30,
        1,
        5,
    ]
    assert "suppressions" not in results[0]
    assert results[1]["suppressions"] == [
        {
            "kind": "external",
            "status": "accepted",
            "justification": "ok",
            "properties": {"by": "leo"},
        }
    ]
    assert results[2]["suppressions"][0]["kind"] == "inSource"
    [notice] = run["invocations"][0]["toolExecutionNotifications"]
    assert notice["message"] == {"text": "0009_x.py: syntax error"}
    assert notice["locations"][0]["physicalLocation"]["artifactLocation"] == {
        "uri": "db/versions/0009_x.py",
        "uriBaseId": "%SRCROOT%",
    }


def test_sarif_uris_are_percent_encoded() -> None:
    log = lint_formats.sarif(
        [report(finding("drop-table", "high", line=3))],
        {"0002": "my app/versions/0002 #1.py"},
        root=Path("/srv"),
    )

    location = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "my%20app/versions/0002%20%231.py"
