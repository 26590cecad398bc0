"""Pre-migration gates: automated checks that each say pass, warn or fail, with the evidence seen.

One function per gate, each taking what it needs, so that each runs (and is tested) alone;
``evaluate`` runs them all in a fixed order over one connection; ``request_gate_run`` records a
``GateRun`` and asks the job lifecycle for it (job kind ``gate_run``), whose ``perform`` runs the
gates on a worker and records their results on the row, audited.

Unknown is never a pass: a gate that cannot see what it checks says why, and warns (or fails,
when what it cannot reach is the database itself).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from dashboard.audit.chain import Actor, record
from dashboard.backups.models import (
    Backup,
    BackupPolicy,
    Validation,
    ValidationOutcome,
    validation_outcome,
)
from dashboard.databases import credentials
from dashboard.databases.models import ManagedDatabase
from dashboard.jobs import lifecycle as jobs
from dashboard.jobs.models import ACTIVE, FINISHED, JobState
from dashboard.lib import pg
from dashboard.lib.secrets import SecretError
from dashboard.schema.models import GateRun, Rehearsal, Verdict

logger = logging.getLogger(__name__)

PASS, WARN, FAIL = Verdict.PASS.value, Verdict.WARN.value, Verdict.FAIL.value
_RANK = {PASS: 0, WARN: 1, FAIL: 2}

TITLES = {
    "backup": "Recent validated backup",
    "ready": "Server accepts connections (pg_isready)",
    "disk": "Disk space of the data directory",
    "long_transactions": "Long-running transactions",
    "locks": "Locks on the tables the revisions touch",
    "wal": "WAL archiving",
    "rehearsal": "Rehearsal of the pending revisions",
}
ORDER = tuple(TITLES)

PROBE_TIMEOUT = 10  # seconds a disk probe may take
QUERY_TIMEOUT = "10s"  # statement_timeout of the gates' own queries
# What a disk probe's process sees of the worker's environment (ssh needs its agent and home).
_PROBE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "SSH_AUTH_SOCK")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")


@dataclass
class GateResult:
    name: str
    title: str
    verdict: str  # "pass", "warn" or "fail"
    summary: str  # one sentence a team lead understands
    evidence: dict[str, Any] = field(default_factory=dict)  # the rows and figures seen

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "verdict": str(self.verdict),
            "summary": self.summary,
            "evidence": json.loads(json.dumps(self.evidence, default=str)),
        }


def _result(
    name: str, verdict: str, summary: str, evidence: dict[str, Any] | None = None
) -> GateResult:
    return GateResult(name, TITLES[name], verdict, summary, evidence or {})


def overall(results: Sequence[GateResult]) -> str:
    """The worst verdict ("pass" for no results)."""
    return max((str(r.verdict) for r in results), key=_RANK.__getitem__, default=PASS)


def duration(seconds: float) -> str:
    """'45 s', '7 min', '3 h 20 min', '4 days': short, for summaries."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 48 * 3600:
        hours, minutes = divmod(s // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{s // 86400} days"


def _reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return pg.redact("; ".join(lines[:2]) or exc.__class__.__name__)


# --- Backup ---


def _completed_backups(db: ManagedDatabase) -> Any:
    """Completed backups (succeeded, still stored: never a failed, interrupted or cancelled
    one), each with its latest validation's outcome (passed, failed, queued, running,
    interrupted, cancelled) as ``v_state``."""
    latest = (
        Validation.objects.filter(backup=OuterRef("pk"))
        .annotate(v_outcome=validation_outcome())
        .order_by("-created_at")
    )
    return (
        Backup.objects.filter(database=db)
        .completed()
        .annotate(
            taken=Coalesce("started_at", "finished_at", "created_at"),
            v_id=Subquery(latest.values("pk")[:1]),
            v_state=Subquery(latest.values("v_outcome")[:1]),
            v_at=Subquery(latest.values("finished_at")[:1]),
            v_error=Subquery(latest.values("error")[:1]),
        )
        .order_by("-taken", "-pk")
    )


def _backup_evidence(backup: Any, now: datetime) -> dict[str, Any]:
    return {
        "id": backup.pk,
        "taken_at": backup.taken.isoformat(),
        "age_s": round((now - backup.taken).total_seconds()),
        "format": backup.format,
        "size_bytes": backup.size_bytes,
        "sha256": backup.sha256,
        "validation": {
            "id": backup.v_id,
            "state": backup.v_state,
            "finished_at": backup.v_at.isoformat() if backup.v_at else None,
            "error": backup.v_error or "",
        },
    }


def backup_gate(db: ManagedDatabase, now: datetime | None = None) -> GateResult:
    """The newest completed backup whose latest restore validation passed must be younger than
    the policy's RPO. A backup's age counts from when its dump started (the snapshot it holds)."""
    now = now or timezone.now()
    # A database without a saved policy runs under the defaults; reading never writes.
    policy = BackupPolicy.objects.filter(database=db).first() or BackupPolicy(database=db)
    rpo = timedelta(hours=policy.rpo_hours)
    backups = _completed_backups(db)
    newest = backups.first()
    good = backups.filter(v_state=ValidationOutcome.PASSED).first()
    evidence: dict[str, Any] = {"rpo_hours": policy.rpo_hours}
    if newest is not None:
        evidence["newest"] = _backup_evidence(newest, now)
    if good is None:
        if newest is None:
            return _result("backup", FAIL, f"No completed backup of {db.name} exists.", evidence)
        age = duration((now - newest.taken).total_seconds())
        state = newest.v_state
        if state == ValidationOutcome.FAILED:
            why = "failed its restore validation" + (
                f": {newest.v_error}" if newest.v_error else ""
            )
        elif state in (ValidationOutcome.QUEUED, ValidationOutcome.RUNNING):
            why = "is still being validated"
        elif state in (ValidationOutcome.INTERRUPTED, ValidationOutcome.CANCELLED):
            why = f"had its validation {state} before it proved anything"
        else:
            why = "was never validated"
        summary = (
            f"No backup has passed a restore validation: the newest, #{newest.pk} "
            f"({age} old), {why}."
        )
        return _result("backup", FAIL, summary, evidence)
    evidence["validated"] = _backup_evidence(good, now)
    age_s = (now - good.taken).total_seconds()
    if age_s > rpo.total_seconds():
        summary = (
            f"The newest validated backup, #{good.pk}, is {duration(age_s)} old; the policy "
            f"allows {policy.rpo_hours} h: take and validate a new backup."
        )
        return _result("backup", FAIL, summary, evidence)
    summary = (
        f"Backup #{good.pk}, taken {duration(age_s)} ago, passed its restore validation "
        f"(#{good.v_id}); the policy allows {policy.rpo_hours} h."
    )
    if newest.pk != good.pk and newest.v_state == ValidationOutcome.FAILED:
        summary = (
            f"Backup #{good.pk} ({duration(age_s)} old) is validated, but the newer backup "
            f"#{newest.pk} failed its restore validation: find out why before migrating."
        )
        return _result("backup", WARN, summary, evidence)
    return _result("backup", PASS, summary, evidence)


# --- Server readiness ---


def ready_gate(dsn: str, server_version: int | None = None) -> GateResult:
    """Runs the real ``pg_isready`` of the server's major version against the DSN."""
    evidence: dict[str, Any] = {"dsn": pg.redact(dsn)}
    try:
        code, output = pg.pg_isready(dsn, server_version, timeout=settings.RUNWAY_CONNECT_TIMEOUT)
    except (pg.BadDsn, pg.ToolFailed) as exc:
        return _result("ready", FAIL, f"pg_isready could not run: {exc}", evidence)
    evidence |= {"exit_code": code, "output": output}
    if code == 0:
        return _result("ready", PASS, f"The server is accepting connections ({output}).", evidence)
    if code == 1:
        summary = (
            f"The server is up but rejecting connections, e.g. starting up or shutting "
            f"down ({output})."
        )
    elif code == 2:
        summary = f"The server did not respond ({output})."
    else:
        summary = f"pg_isready could not try the connection (exit {code}: {output})."
    return _result("ready", FAIL, summary, evidence)


# --- Disk space ---


def local_data_directory(conn: pg.Connection) -> tuple[str | None, str]:
    """The server's data directory when it is on the worker's host and is this server's; else
    None and why not (in words that finish "disk use is unknown: ...")."""
    path = pg.data_directory(conn)
    if path is None:
        return None, (
            f"the role {conn.info.user} may not read data_directory "
            "(it needs superuser or pg_read_all_settings)"
        )
    if not Path(path).is_dir():
        return None, f"the data directory {path} is not on the worker's host"
    same = pg.runs_from(conn, path)
    if same is None:
        return None, (
            f"the worker cannot read {path}/postmaster.pid to confirm the folder is this server's"
        )
    if not same:
        return None, f"{path} on the worker's host belongs to another server"
    return path, ""


def _disk_verdict(percent: float, evidence: dict[str, Any], where: str) -> GateResult:
    fail_at, warn_at = settings.RUNWAY_DISK_FAIL_PERCENT, settings.RUNWAY_DISK_WARN_PERCENT
    evidence |= {"percent": percent, "fail_above": fail_at, "warn_above": warn_at}
    shown = f"{percent:g}%"
    if percent > fail_at:
        summary = f"{where} is {shown} full, above the {fail_at}% limit: free space first."
        return _result("disk", FAIL, summary, evidence)
    if percent > warn_at:
        summary = f"{where} is {shown} full, above the {warn_at}% warning level."
        return _result("disk", WARN, summary, evidence)
    return _result("disk", PASS, f"{where} is {shown} full (fail above {fail_at}%).", evidence)


def run_disk_probe(command: str) -> tuple[float | None, dict[str, Any], str]:
    """Run a configured probe (no shell) and read the first percentage it prints.

    Returns (percent or None, evidence, why it gave no percentage)."""
    evidence: dict[str, Any] = {"source": "probe", "command": command}
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return None, evidence, f"the disk probe cannot be parsed ({exc})"
    env = {k: v for k, v in os.environ.items() if k in _PROBE_ENV or k.startswith("LC_")}
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return None, evidence, f"the disk probe did not finish within {PROBE_TIMEOUT} s"
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the command
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        return None, evidence, f"the disk probe could not start ({reason})"
    output = (done.stdout + done.stderr).strip()
    evidence |= {"exit_code": done.returncode, "output": output[:500]}
    if done.returncode != 0:
        detail = " ".join(output.split())[:200]
        return (
            None,
            evidence,
            f"the disk probe failed (exit {done.returncode}{': ' + detail if detail else ''})",
        )
    found = _PERCENT.search(done.stdout)
    if found is None:
        return None, evidence, "the disk probe printed no percentage"
    return float(found.group(1)), evidence, ""


def _measure(data_dir: str) -> GateResult | str:
    """The gate's result from the file system holding ``data_dir``, or why it cannot be had."""
    try:
        usage = shutil.disk_usage(data_dir)
    except OSError as exc:
        return f"{data_dir} cannot be measured ({exc.strerror or exc})"
    # As df counts it: space reserved for root is neither used nor available.
    percent = round(usage.used / (usage.used + usage.free) * 100, 1)
    evidence = {
        "source": "data_directory",
        "path": data_dir,
        "total_bytes": usage.total,
        "used_bytes": usage.used,
        "free_bytes": usage.free,
    }
    return _disk_verdict(percent, evidence, f"The disk holding {data_dir}")


def disk_gate(data_dir: str | None, probe: str = "", *, unseen: str = "") -> GateResult:
    """Disk use of the data directory's file system: measured here when ``data_dir`` is on this
    host (see ``local_data_directory``), else read from the configured ``probe``; else unknown,
    a warning. ``unseen`` says why ``data_dir`` is None."""
    reasons = [unseen or "the data directory is not visible from the worker"]
    if data_dir:
        measured = _measure(data_dir)
        if isinstance(measured, GateResult):
            return measured
        reasons = [measured]
    evidence: dict[str, Any] = {"source": None}
    if probe:
        percent, evidence, why = run_disk_probe(probe)
        if percent is not None:
            return _disk_verdict(percent, evidence, "The data directory's disk (by the probe)")
        reasons.append(why)
    else:
        reasons.append("no disk probe is configured for the database")
    evidence["unknown_because"] = reasons
    summary = f"Disk use of the data directory is unknown: {'; '.join(reasons)}."
    return _result("disk", WARN, summary, evidence)


# --- Sessions and locks ---


def long_transactions_gate(conn: pg.Connection, threshold_s: float | None = None) -> GateResult:
    """Other sessions whose transaction has been open longer than the threshold (default
    RUNWAY_LONG_TRANSACTION_SECONDS): a warning, as is not being allowed to see other roles'."""
    threshold = settings.RUNWAY_LONG_TRANSACTION_SECONDS if threshold_s is None else threshold_s
    rows = pg.long_transactions(conn, threshold)
    hidden = pg.hidden_sessions(conn)
    evidence = {"threshold_s": threshold, "transactions": rows, "hidden_sessions": hidden}
    limit = duration(threshold)
    if rows:
        oldest = rows[0]
        summary = (
            f"{len(rows)} transaction{'s' if len(rows) != 1 else ''} open longer than {limit}: "
            f"the oldest, pid {oldest['pid']} ({oldest['usename']}, {oldest['state']}), "
            f"for {duration(oldest['age_s'] or 0)}; DDL would queue behind it and block others."
        )
        return _result("long_transactions", WARN, summary, evidence)
    if hidden:
        summary = (
            f"No visible transaction is older than {limit}, but {hidden} session"
            f"{'s' if hidden != 1 else ''} of other roles cannot be inspected: grant "
            f"pg_read_all_stats to {conn.info.user}."
        )
        return _result("long_transactions", WARN, summary, evidence)
    summary = f"No transaction has been open longer than {limit}."
    return _result("long_transactions", PASS, summary, evidence)


def _describe_lock(row: dict[str, Any]) -> str:
    who = "a prepared transaction" if row["prepared"] else f"pid {row['pid']}"
    verb = "holds" if row["granted"] else "waits for"
    context = [v for v in (row["usename"], row["state"]) if v]
    if row["xact_age_s"] is not None:
        context.append(f"transaction open {duration(row['xact_age_s'])}")
    detail = f" ({', '.join(context)})" if context else ""
    return f"{who}{detail} {verb} {row['mode']} on {row['table']}"


def _gives_way(row: dict[str, Any]) -> bool:
    """Autovacuum cancels itself when a lock it holds is wanted, unless it prevents wraparound;
    a backend already gone from pg_stat_activity is exiting and releases its locks."""
    if row.get("pid") is not None and row.get("backend_type") is None:
        return True
    return row.get("backend_type") == "autovacuum worker" and "wraparound" not in (
        row.get("query") or ""
    )


def _lingers(row: dict[str, Any]) -> bool:
    """A lock that would hold the migration up: a waiter, a prepared transaction, a session idle
    in its transaction, or a transaction open for longer than RUNWAY_LOCK_HOLDER_SECONDS."""
    if row["prepared"] or not row["granted"]:
        return True
    if (row["state"] or "").startswith("idle in transaction"):
        return True
    age = row["xact_age_s"]
    return age is None or age >= settings.RUNWAY_LOCK_HOLDER_SECONDS


def lock_gate(conn: pg.Connection, tables: Sequence[str]) -> GateResult:
    """Sessions (not ours) holding or waiting for any lock on the tables: the migration's own
    locks would queue behind them, and everything else behind the migration."""
    if not tables:
        summary = "The pending revisions touch no existing table."
        return _result("locks", PASS, summary, {"tables": []})
    existing = pg.existing_tables(conn, list(tables))
    evidence: dict[str, Any] = {"requested": list(tables), "tables": existing}
    if not existing:
        summary = f"None of the tables the revisions touch exists yet ({', '.join(tables)})."
        return _result("locks", PASS, summary, evidence)
    rows = pg.lock_holders(conn, existing)
    evidence["sessions"] = rows
    if not rows:
        summary = f"No other session holds or waits for a lock on {', '.join(existing)}."
        return _result("locks", PASS, summary, evidence)
    blocking = [row for row in rows if not _gives_way(row)]
    if not blocking:
        summary = (
            f"Only autovacuum works on {', '.join(sorted({r['table'] for r in rows}))}; it "
            "gives way to the migration's locks by itself."
        )
        return _result("locks", WARN, summary, evidence)
    if not any(_lingers(row) for row in blocking):
        sessions = {row["pid"] for row in blocking}
        summary = (
            f"{len(sessions)} running quer{'y holds' if len(sessions) == 1 else 'ies hold'} "
            f"brief locks on {', '.join(sorted({r['table'] for r in blocking}))} (open less "
            f"than {settings.RUNWAY_LOCK_HOLDER_SECONDS} s, none waiting): normal traffic; the "
            "migration's lock_timeout keeps it from queueing behind a longer one."
        )
        return _result("locks", WARN, summary, evidence)
    sessions = {row["pid"] or row["virtualtransaction"] for row in blocking}
    shown = "; ".join(_describe_lock(row) for row in blocking[:3])
    more = f"; and {len(blocking) - 3} more" if len(blocking) > 3 else ""
    who = (
        "1 session holds or waits"
        if len(sessions) == 1
        else f"{len(sessions)} sessions hold or wait"
    )
    summary = f"{who} for locks on the tables the migration changes: {shown}{more}."
    return _result("locks", FAIL, summary, evidence)


# --- WAL archiving ---


def _when(value: Any) -> datetime | None:
    return parse_datetime(value) if isinstance(value, str) and value else None


def wal_gate(wal: dict[str, Any], now: datetime | None = None) -> GateResult:
    """From what ``pg.read_wal`` returns: off is a warning (no point-in-time recovery), failing
    archiving (the last failure newer than the last success) is a failure."""
    now = now or timezone.now()
    evidence = dict(wal)
    mode = wal.get("archive_mode")
    if mode is None:
        why = wal.get("settings_error") or "the archive settings could not be read"
        return _result("wal", WARN, f"WAL archiving status is unknown: {why}.", evidence)
    if mode == "off":
        summary = (
            "WAL archiving is off: there is no point-in-time recovery, only a restore of the "
            "last full backup."
        )
        return _result("wal", WARN, summary, evidence)
    if wal.get("archive_command_set") is False:
        summary = (
            f"archive_mode is {mode} but neither archive_command nor archive_library is set: "
            "WAL piles up in pg_wal and is never archived."
        )
        return _result("wal", FAIL, summary, evidence)
    archiver = wal.get("archiver")
    if not archiver:
        why = wal.get("archiver_error") or "pg_stat_archiver could not be read"
        return _result(
            "wal", WARN, f"WAL archiving is on but its state is unknown: {why}.", evidence
        )
    archived = _when(archiver.get("last_archived_time"))
    failed = _when(archiver.get("last_failed_time"))
    if failed is not None and (archived is None or failed > archived):
        since = ", and nothing was ever archived"
        if archived is not None:
            since = f"; the last success was {duration((now - archived).total_seconds())} ago"
        summary = (
            f"WAL archiving is failing: {archiver.get('last_failed_wal')} failed "
            f"{duration((now - failed).total_seconds())} ago ({archiver.get('failed_count')} "
            f"failures since the statistics were reset){since}."
        )
        return _result("wal", FAIL, summary, evidence)
    if archived is None:
        summary = "WAL archiving is on but no segment has been archived yet, so it is unproven."
        return _result("wal", WARN, summary, evidence)
    summary = (
        f"WAL archiving works: {archiver.get('last_archived_wal')} was archived "
        f"{duration((now - archived).total_seconds())} ago."
    )
    return _result("wal", PASS, summary, evidence)


# --- Rehearsal ---


def _rehearsal_evidence(found: Rehearsal) -> dict[str, Any]:
    return {
        "id": found.pk,
        "state": found.state,
        "revisions": found.revisions,
        "finished_at": found.finished_at.isoformat() if found.finished_at else None,
        "method": found.method,
        "copy_seconds": found.copy_seconds,
        "total_seconds": found.total_seconds,
        "longest_lock_wait_ms": found.longest_lock_wait_ms,
        "timings": found.timings,
        "error": found.error,
    }


def rehearsal_gate(db: ManagedDatabase, revisions: Sequence[str]) -> GateResult:
    """The newest finished rehearsal of exactly these pending revisions must have succeeded,
    running each of them without error. Whatever else it ended as fails the gate: failed (a
    revision failed, or the copy could not be made), and interrupted or cancelled too (half a
    rehearsal proves nothing, and an older success does not outweigh a newer end)."""
    revisions = list(revisions)
    if not revisions:
        return _result("rehearsal", PASS, "Nothing is pending, so there is nothing to rehearse.")
    names = ", ".join(revisions)
    evidence: dict[str, Any] = {"revisions": revisions}
    same = db.rehearsals.filter(revisions=revisions).order_by("-requested_at", "-pk")
    found = same.filter(state__in=FINISHED).first()
    if found is None:
        active = same.filter(state__in=ACTIVE).first()
        other = db.rehearsals.exclude(revisions=revisions).filter(state=JobState.SUCCEEDED).first()
        if active is not None:
            evidence["rehearsal"] = _rehearsal_evidence(active)
            summary = f"The rehearsal of {names} (#{active.pk}) is {active.state}, not done yet."
        elif other is not None:
            evidence["other"] = _rehearsal_evidence(other)
            summary = (
                f"No rehearsal of {names} yet: the last one (#{other.pk}) ran "
                f"{', '.join(other.revisions) or 'nothing'}."
            )
        else:
            summary = f"No rehearsal of {names} yet."
        return _result("rehearsal", FAIL, summary, evidence)
    evidence["rehearsal"] = _rehearsal_evidence(found)
    if found.state in (JobState.INTERRUPTED, JobState.CANCELLED):
        why = f" ({found.error.rstrip('.')})" if found.error else ""
        summary = (
            f"The rehearsal of {names} (#{found.pk}) was {found.get_state_display().lower()} "
            f"before it finished{why}: rehearse again."
        )
        return _result("rehearsal", FAIL, summary, evidence)
    timed = {t.get("revision"): t for t in found.timings}
    broken = next((r for r in revisions if not (timed.get(r) or {}).get("ok")), None)
    if found.state != JobState.SUCCEEDED or broken is not None:
        error = ((timed.get(broken) or {}).get("error") if broken else "") or found.error
        where = f" at {broken}" if broken else ""
        summary = f"The rehearsal of {names} (#{found.pk}) failed{where}" + (
            f": {error}" if error else ""
        )
        return _result("rehearsal", FAIL, summary.rstrip(".") + ".", evidence)
    per = ", ".join(f"{r} {float(timed[r].get('seconds') or 0):.1f} s" for r in revisions)
    lock_ms = found.longest_lock_wait_ms
    waited = f"{lock_ms:.0f} ms" if lock_ms is not None else "not measured"
    summary = (
        f"Rehearsal #{found.pk} ran {names} on a copy ({per}); the longest lock wait: {waited}."
    )
    return _result("rehearsal", PASS, summary, evidence)


# --- All of them ---


def _connect(db: ManagedDatabase, password: str | None) -> tuple[pg.Connection | None, str]:
    try:
        conn = pg.connect(
            db.dsn,
            password,
            timeout=settings.RUNWAY_CONNECT_TIMEOUT,
            application_name="runway-gates",
        )
    except pg.BadDsn as exc:
        return None, str(exc)
    except pg.Error as exc:
        problem = pg.classify(exc)
        return None, f"{pg.PROBLEM_MESSAGES[problem]}: {_reason(exc)}"
    try:
        conn.execute("SELECT set_config('statement_timeout', %s, false)", [QUERY_TIMEOUT])
    except pg.Error as exc:
        conn.close()
        return None, f"{pg.PROBLEM_MESSAGES['error']}: {_reason(exc)}"
    return conn, ""


def _over(
    name: str,
    conn: pg.Connection | None,
    problem: str,
    gate: Callable[[pg.Connection], GateResult],
) -> GateResult:
    """A gate that reads the database: fails with the reason when it cannot."""
    if conn is None:
        return _result(name, FAIL, f"Not checked: {problem}.", {"error": problem})
    try:
        return gate(conn)
    except pg.Error as exc:
        reason = _reason(exc)
        return _result(name, FAIL, f"The check could not run: {reason}.", {"error": reason})


def _disk(db: ManagedDatabase, conn: pg.Connection | None, problem: str) -> GateResult:
    data_dir, unseen = None, f"Runway could not connect ({problem})"
    if conn is not None:
        try:
            data_dir, unseen = local_data_directory(conn)
        except pg.Error as exc:
            unseen = f"the data directory could not be read ({_reason(exc)})"
    return disk_gate(data_dir, db.disk_probe, unseen=unseen)


def evaluate(
    db: ManagedDatabase, *, revisions: Sequence[str], tables: Sequence[str]
) -> list[GateResult]:
    """Every gate, in ``ORDER``, over one connection to ``db``. A connection that cannot be made
    fails the gates that need it, with the reason; nothing raises for an unreachable database."""
    password, problem = None, ""
    try:
        password = credentials.password(db)
    except SecretError as exc:
        problem = f"{pg.PROBLEM_MESSAGES['secret']}: {exc}"
    conn = None
    if not problem:
        conn, problem = _connect(db, password)
    try:
        version = conn.info.server_version if conn is not None else None
        return [
            backup_gate(db),
            ready_gate(db.dsn, version),
            _disk(db, conn, problem),
            _over("long_transactions", conn, problem, long_transactions_gate),
            _over("locks", conn, problem, lambda c: _settled_lock_gate(c, tables)),
            _over("wal", conn, problem, lambda c: wal_gate(pg.read_wal(c))),
            rehearsal_gate(db, revisions),
        ]
    finally:
        if conn is not None:
            conn.close()


def _settled_lock_gate(conn: pg.Connection, tables: Sequence[str]) -> GateResult:
    """Locks are a moment's picture: a failing lock gate is looked at again after
    RUNWAY_LOCK_RECHECK_SECONDS, and fails only if a holder is still there."""
    first = lock_gate(conn, tables)
    if first.verdict != FAIL or settings.RUNWAY_LOCK_RECHECK_SECONDS <= 0:
        return first
    time.sleep(settings.RUNWAY_LOCK_RECHECK_SECONDS)
    again = lock_gate(conn, tables)
    if again.verdict == FAIL:
        return again
    gone = f" (a lock seen {settings.RUNWAY_LOCK_RECHECK_SECONDS} s earlier was released)"
    again.summary = again.summary.rstrip(".") + gone + "."
    again.evidence["first_look"] = first.evidence
    return again


# --- Runs on a worker (job kind "gate_run") ---


@transaction.atomic
def request_gate_run(
    actor: Actor | None,
    db: ManagedDatabase,
    *,
    revisions: Sequence[str],
    tables: Sequence[str],
    enqueue: bool = True,
) -> GateRun:
    """Record a gate run for ``db``'s pending ``revisions`` (``tables``: the existing tables they
    touch, which the lock gate watches), audited, and queue it for a worker; ``enqueue=False``
    when the caller runs it itself (``jobs.run("gate_run", run.pk)``)."""
    run = GateRun.objects.create(
        database=db,
        requested_by=actor if actor is not None and actor.pk else None,  # type: ignore[misc]
        revisions=list(revisions),
        tables=list(tables),
    )
    details = {"gate_run": run.pk, "revisions": list(revisions), "tables": list(tables)}
    record(actor, "schema.gates_requested", db, details=details)
    if enqueue:
        jobs.enqueue(run)
    return run


def perform(run: GateRun, context: jobs.Context) -> None:
    """The job's work: every gate over the row's revisions and tables, recorded on the row with
    its audit event. Gates that say fail make a succeeded run whose verdict is fail; a run whose
    gates could not run at all fails, with the reason and no verdict."""
    try:
        results = evaluate(run.database, revisions=run.revisions, tables=run.tables)
    except Exception as exc:
        logger.exception("gate run %s failed", run.pk)
        _finish(run, [], error=f"The gates could not run: {_reason(exc)}")
        return
    context.check_cancelled()  # asked to stop while the gates ran: what they saw is not wanted
    _finish(run, results)


def _finish(run: GateRun, results: list[GateResult], *, error: str = "") -> None:
    fields = {"results": [r.to_json() for r in results], "verdict": overall(results)}
    if error:
        fields["verdict"] = ""
    with transaction.atomic():
        if not (run.fail(error, **fields) if error else run.succeed(**fields)):
            return  # no longer ours (the reaper interrupted it): the row says so already
        record(
            None,
            "schema.gates_run",
            run.database,
            details={
                "gate_run": run.pk,
                "state": run.state,
                "verdict": run.verdict,
                "gates": {r.name: r.verdict for r in results},
                "error": error,
            },
        )


jobs.register(
    jobs.Kind(
        "gate_run",
        GateRun,
        perform,
        # The gates take seconds (one connection, pg_isready, a probe of at most PROBE_TIMEOUT,
        # queries under QUERY_TIMEOUT, one lock re-check); the heart beats from its own thread
        # meanwhile, so a minute without a beat is a dead worker. A run nobody took for ten
        # minutes would report on a moment long past (locks, transactions): it is not wanted.
        stale_after=60,
        queued_after=600,
        heartbeat_every=10,
        max_attempts=1,
    )
)
