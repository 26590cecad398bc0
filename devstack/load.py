"""The demo's application: a small load process that plays the seed application (the analytics
bot) against a managed database, and measures how it fares.

``python -m devstack load --dsn "host=... dbname=... user=..." [--password-file F] [--clients 8]
[--port 8090]`` runs it until Ctrl-C or SIGTERM; as a library (the stall bench, the tests)::

    load = Load(dsn, clients=8).start()
    t0 = load.clock()
    ...                                  # change the schema under it
    print(load.stats(since=t0))
    load.stop()

Each of ``clients`` threads has its own connection (``application_name`` ``runway-demo-load``)
and loops over short transactions like the bot's, picked at random: a payment for a random user
(read the user's plan, insert the payment), a user's plan changed (the seed schema has no
``last_seen``: the bot's other per-user write is its plan and ``is_active``), a channel added for
a random user, a channel renamed, a user logging in (the user read; the attempt recorded in the
``auth_attempts`` table the load creates when it is missing, failing as a mistyped password does
in ``AUTH_FAILURE_RATE`` (1%) of attempts, and always for a user who is gone). Between two
transactions a client waits ``think`` seconds
(default 10 ms), so eight clients make a few hundred transactions a second rather than saturating
the machine.

Every completed transaction's completion time and latency are recorded (a failed one is counted
as an error and completes nothing). A *stall* is a gap during which no transaction completed; the
gaps longer than ``STALL_THRESHOLD`` (100 ms, about ten times the longest gap of a healthy run
here) are added up as stalled time. A gap still open counts up to now, so a stall shows while it
lasts.

``serve(port)`` answers on 127.0.0.1 only:

- ``GET /health``: 200 when the application can do its work: the last transaction completed
  within ``HEALTHY_WITHIN`` (1 s) and at most ``HEALTH_ERROR_SHARE`` (10%) of the transactions of
  the last ``HEALTH_WINDOW`` (5 s) failed; else 503 (a migration that breaks one of its writes
  shows so). JSON ``{"healthy", "why", "last_transaction_seconds_ago", "recent_failed_percent",
  "clients", "errors", "last_error"}``;
- ``GET /auth-failure-rate``: JSON ``{"value": percent, "attempts": n, "window_seconds": 60}``,
  the share of the last minute's log-in attempts that failed (what a rollback trigger's custom
  HTTP signal reads; the ``auth_attempts`` table serves a custom SQL one);
- ``GET /stats?window=10&series=60``: the JSON of :meth:`Load.stats`: over the last ``window``
  seconds, transactions per second, p50/p99 latency, the longest stall and the stalled seconds;
  the same since start; one row per second for the last ``series`` seconds.

Raw completions are kept for ``KEEP_SECONDS`` (10 minutes, 12 bytes each); what is "since start"
is kept as running totals, so a demo left running for days holds a few megabytes.

psycopg only (devstack's own connections): the product never imports this module.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import signal
import sys
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
from psycopg import conninfo

APPLICATION_NAME = "runway-demo-load"
STALL_THRESHOLD = 0.1  # seconds without a completed transaction that count as stalled
HEALTHY_WITHIN = 1.0  # /health: the last transaction completed at most this long ago
HEALTH_WINDOW = 5.0  # /health: the seconds whose failed share it judges
HEALTH_ERROR_SHARE = 0.1  # /health: more failed transactions than this in the window: 503
AUTH_FAILURE_RATE = 0.01  # log-ins that fail (a mistyped password)
AUTH_WINDOW = 60.0  # /auth-failure-rate: over the last minute
AUTH_KEEP = "1 hour"  # auth_attempts rows kept in the database
KEEP_SECONDS = 600.0  # raw completions kept for windowed stats
CONNECT_TIMEOUT = 5
PRICES = (Decimal("4.99"), Decimal("14.99"), Decimal("49.00"))
TITLES = ("Crypto Digest", "Tech Weekly", "Travel Notes", "Football Daily", "AI Insider")
# (name, weight): what the bot does most.
KINDS = (("payment", 3), ("plan", 3), ("new_channel", 1), ("rename_channel", 3), ("login", 2))
AUTH_TABLE = (
    "CREATE TABLE IF NOT EXISTS auth_attempts (id bigserial PRIMARY KEY, user_id integer, "
    "ok boolean NOT NULL, at timestamptz NOT NULL DEFAULT now())"
)
AUTH_INDEX = "CREATE INDEX IF NOT EXISTS auth_attempts_at ON auth_attempts (at)"
# The query a custom SQL rollback trigger reads: the last minute's failed share, in %.
AUTH_FAILURE_SQL = (
    "SELECT 100.0 * count(*) FILTER (WHERE NOT ok) / greatest(count(*), 1) "
    "FROM auth_attempts WHERE at > now() - interval '1 minute'"
)


class LoadError(ValueError):
    """Bad input or an unusable database; the message says what to do."""


def check_dsn(dsn: str) -> dict[str, Any]:
    """The DSN's parts, or LoadError naming what is wrong (never echoing a password)."""
    if not isinstance(dsn, str) or not dsn.strip():
        raise LoadError("No DSN given: pass --dsn 'host=... port=... dbname=... user=...'.")
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        lines = str(exc).strip().splitlines()
        detail = lines[0] if lines else "unreadable"
        if not detail.startswith(("invalid connection option", "invalid URI query parameter")):
            # libpq quotes the fragment it could not read, which may be (part of) a password.
            detail = re.sub(r'(after )"[^"]*"', r'\1"…"', detail)
        raise LoadError(
            f"The DSN cannot be parsed ({detail}). Expected 'host=... port=... dbname=... "
            "user=...' or postgresql://user@host:port/dbname."
        ) from None
    if not parts.get("dbname"):
        raise LoadError("The DSN names no database (dbname=...).")
    return parts


def check_clients(clients: object) -> int:
    if isinstance(clients, bool) or not isinstance(clients, int) or clients <= 0:
        raise LoadError(f"clients must be a positive integer, got {clients!r}.")
    return clients


def _where(parts: dict[str, Any]) -> str:
    host = parts.get("host") or parts.get("hostaddr") or "the local socket"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"{parts.get('dbname')} on {host}{port}"


class Load:
    """``clients`` threads playing the seed application on ``dsn`` (see the module's doc)."""

    def __init__(
        self,
        dsn: str,
        clients: int = 8,
        *,
        password: str | None = None,
        think: float = 0.01,
        seed: int | None = None,
        stall_threshold: float = STALL_THRESHOLD,
    ) -> None:
        self.parts = check_dsn(dsn)
        self.clients = check_clients(clients)
        if not isinstance(think, int | float) or think < 0:
            raise LoadError(f"think must be a number of seconds >= 0, got {think!r}.")
        self.dsn = dsn
        self.password = password
        self.think = float(think)
        self.seed = seed if seed is not None else random.randrange(2**31)
        self.stall_threshold = stall_threshold
        self.where = _where(self.parts)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[psycopg.Connection | None] = []
        self._times = array("d")  # completion times (monotonic), in order
        self._latencies = array("f")  # seconds, same index
        self._errors: list[float] = []  # times of failed transactions (the last KEEP_SECONDS)
        self._logins: list[tuple[float, bool]] = []  # (time, ok) of the last AUTH_WINDOW
        self._server: ThreadingHTTPServer | None = None
        self.started_at = 0.0
        self.port: int | None = None
        self.users = self.channels = 0
        # Since start, as running totals.
        self.completed = 0
        self.error_count = 0
        self.last_error = ""
        self._last = 0.0
        self._longest = 0.0
        self._stalled = 0.0
        self._stalls = 0

    # --- Running ---

    def _connect(self) -> psycopg.Connection:
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": APPLICATION_NAME,
            "connect_timeout": CONNECT_TIMEOUT,
        }
        if self.password is not None:
            kwargs["password"] = self.password
        return psycopg.connect(self.dsn, **kwargs)

    def start(self) -> Load:
        """Connect every client (LoadError if the database cannot be reached or holds no seeded
        users), then start them; returns self."""
        if self._threads:
            raise LoadError("This load is already running.")
        conns: list[psycopg.Connection] = []
        try:
            for _ in range(self.clients):
                conns.append(self._connect())
            users, channels = self._size_up(conns[0])
            self._auth_table(conns[0])
        except BaseException as exc:
            for conn in conns:
                conn.close()
            if isinstance(exc, psycopg.OperationalError):
                lines = str(exc).strip().splitlines() or [type(exc).__name__]
                detail = lines[0].removeprefix("connection failed: ")
                raise LoadError(f"Cannot connect to {self.where}: {detail}") from None
            raise
        self.users, self.channels = users, max(channels, 1)
        self._conns = list(conns)
        self.started_at = self._last = time.monotonic()
        for index in range(self.clients):
            thread = threading.Thread(
                target=self._client, args=(index,), name=f"load-client-{index}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def _size_up(self, conn: psycopg.Connection) -> tuple[int, int]:
        """The highest user and channel ids; LoadError unless the seed schema is there, seeded."""
        tables = conn.execute(
            "SELECT count(to_regclass(name)) FROM unnest(ARRAY['users', 'channels', 'payments']) "
            "AS name"
        ).fetchone()
        if not tables or tables[0] != 3:
            raise LoadError(
                f"{self.where} has no users, channels and payments tables: migrate it with "
                "migrations_target (alembic upgrade 0016) and seed it first."
            )
        row = conn.execute(
            "SELECT (SELECT coalesce(max(id), 0) FROM users), "
            "(SELECT coalesce(max(id), 0) FROM channels)"
        ).fetchone()
        users, channels = (int(row[0]), int(row[1])) if row else (0, 0)
        if not users:
            raise LoadError(
                f"{self.where} has no users to play: seed it first "
                "(python -m devstack seed_target NAME --users 2000)."
            )
        return users, channels

    def _auth_table(self, conn: psycopg.Connection) -> None:
        """The log-in attempts' table, made when missing (LoadError when it cannot be)."""
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('runway-demo-auth-table'))")
                conn.execute(AUTH_TABLE)
                conn.execute(AUTH_INDEX)
        except psycopg.errors.InsufficientPrivilege:
            raise LoadError(
                f"{self.where}: the load's role may not create the auth_attempts table (its "
                "log-ins are recorded there): run it as the database's owner."
            ) from None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the clients (cancelling the statement a client is blocked in) and the server."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        grace = time.monotonic() + self.think * 2 + 0.2
        for thread in self._threads:
            thread.join(max(0.0, grace - time.monotonic()))
        for index, thread in enumerate(self._threads):
            while thread.is_alive() and time.monotonic() < deadline:
                conn = self._conns[index]
                if conn is not None and not conn.closed:
                    with contextlib.suppress(psycopg.Error):
                        conn.cancel_safe(timeout=2)
                thread.join(0.2)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _client(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        names = [name for name, _ in KINDS]
        weights = [weight for _, weight in KINDS]
        conn = self._conns[index]
        backoff = 0.1
        while not self._stopping.is_set():
            if conn is None or conn.closed:
                try:
                    conn = self._connect()
                    self._conns[index] = conn
                    backoff = 0.1
                except psycopg.OperationalError as exc:
                    self._failed(exc)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
            kind = rng.choices(names, weights)[0]
            began = time.monotonic()
            try:
                with conn.transaction():
                    self._play(conn, kind, rng)
            except psycopg.OperationalError as exc:
                if self._stopping.is_set():
                    break
                self._failed(exc)
                if conn.closed or conn.broken:
                    conn = None
                continue
            except psycopg.Error as exc:
                if self._stopping.is_set():
                    break
                self._failed(exc)
                continue
            self._completed(began)
            if self.think:
                self._stopping.wait(rng.uniform(0.5, 1.5) * self.think)
        if conn is not None:
            conn.close()

    def _play(self, conn: psycopg.Connection, kind: str, rng: random.Random) -> None:
        user = rng.randint(1, self.users)
        if kind == "payment":
            row = conn.execute(
                "SELECT p.price FROM users AS u JOIN plans AS p ON p.id = u.plan_id "
                "WHERE u.id = %s",
                (user,),
            ).fetchone()
            amount = row[0] if row and row[0] else rng.choice(PRICES)
            conn.execute(
                "INSERT INTO payments (user_id, amount, status, currency) "
                "VALUES (%s, %s, 'succeeded', 'USD')",
                (user, amount),
            )
        elif kind == "plan":
            conn.execute(
                "UPDATE users SET plan_id = %s, is_active = true WHERE id = %s",
                (rng.randint(1, 4), user),
            )
        elif kind == "login":
            row = conn.execute("SELECT is_active FROM users WHERE id = %s", (user,)).fetchone()
            ok = row is not None and rng.random() >= AUTH_FAILURE_RATE
            conn.execute("INSERT INTO auth_attempts (user_id, ok) VALUES (%s, %s)", (user, ok))
            if rng.random() < 0.001:  # now and then, forget the attempts older than AUTH_KEEP
                conn.execute(f"DELETE FROM auth_attempts WHERE at < now() - interval '{AUTH_KEEP}'")
            self._login(ok)
        elif kind == "new_channel":
            conn.execute(
                "INSERT INTO channels (user_id, title) VALUES (%s, %s)",
                (user, rng.choice(TITLES)),
            )
        else:
            conn.execute(
                "UPDATE channels SET title = %s WHERE id = %s",
                (rng.choice(TITLES), rng.randint(1, self.channels)),
            )

    def _completed(self, began: float) -> None:
        with self._lock:
            now = time.monotonic()
            gap = now - self._last
            if gap > self._longest:
                self._longest = gap
            if gap > self.stall_threshold:
                self._stalled += gap
                self._stalls += 1
            self._last = now
            self.completed += 1
            self._times.append(now)
            self._latencies.append(now - began)
            if now - self._times[0] > KEEP_SECONDS * 1.1:
                cut = bisect_left(self._times, now - KEEP_SECONDS)
                del self._times[:cut]
                del self._latencies[:cut]
                self._errors = [t for t in self._errors if t >= now - KEEP_SECONDS]

    def _login(self, ok: bool) -> None:
        # Recorded as the transaction runs (a failed commit then counts an attempt that never
        # happened: rare, and only while the database fails).
        with self._lock:
            now = time.monotonic()
            self._logins.append((now, ok))
            if now - self._logins[0][0] > AUTH_WINDOW * 1.5:
                self._logins = [x for x in self._logins if x[0] >= now - AUTH_WINDOW]

    def auth_failure_rate(self) -> tuple[float, int]:
        """The failed share of the last minute's log-in attempts, in %, and their number."""
        with self._lock:
            since = time.monotonic() - AUTH_WINDOW
            recent = [ok for t, ok in self._logins if t >= since]
        if not recent:
            return 0.0, 0
        return 100.0 * recent.count(False) / len(recent), len(recent)

    def _failed(self, exc: BaseException) -> None:
        text = str(exc).strip().splitlines()
        with self._lock:
            self.error_count += 1
            self._errors.append(time.monotonic())
            if len(self._errors) > 10_000:  # a database gone for long: keep the recent ones
                del self._errors[:5_000]
            self.last_error = f"{type(exc).__name__}: {text[0] if text else ''}"

    # --- Measuring ---

    @staticmethod
    def clock() -> float:
        """The clock the load's times are on (``since``/``until`` of :meth:`stats`)."""
        return time.monotonic()

    def last_transaction_ago(self) -> float:
        with self._lock:
            return time.monotonic() - self._last

    def healthy(self) -> bool:
        return not self.health()[0]

    def health(self) -> tuple[str, float, float]:
        """Why the application cannot do its work ('' when it can), how long ago its last
        transaction completed, and the failed share of the last HEALTH_WINDOW's transactions (%)."""
        with self._lock:
            now = time.monotonic()
            ago = now - self._last
            since = now - HEALTH_WINDOW
            done = len(self._times) - bisect_left(self._times, since)
            failed = len(self._errors) - bisect_left(self._errors, since)
        share = failed / (done + failed) if done + failed else 0.0
        if not self._threads:
            why = "not started"
        elif ago > HEALTHY_WITHIN:
            why = f"no transaction completed for {ago:.1f} s"
        elif share > HEALTH_ERROR_SHARE:
            why = f"{failed} of the last {HEALTH_WINDOW:g} s's {done + failed} transactions failed"
        else:
            why = ""
        return why, ago, round(100 * share, 1)

    def stats(
        self,
        window: float = 10.0,
        *,
        since: float | None = None,
        until: float | None = None,
        series: int = 60,
    ) -> dict[str, Any]:
        """What the application saw: over a window (the last ``window`` seconds, or from
        ``since`` to ``until``, both on :meth:`clock`, ``until`` defaulting to now), since
        start, and per second (the window's seconds when ``since`` is given, else the last
        ``series`` seconds). Times in seconds, latencies in milliseconds."""
        # Under the lock only what copying takes: the clients wait for it to record.
        with self._lock:
            now = time.monotonic()
            end = now if until is None else min(until, now)
            start = max(end - window, self.started_at) if since is None else since
            start = max(start, self.started_at)
            if since is None:
                first_second = max(0, int(end - self.started_at) - series + 1)
            else:
                first_second = int(start - self.started_at)
            lo = bisect_left(self._times, min(start, self.started_at + first_second))
            hi = bisect_right(self._times, end)
            times, latencies = self._times[lo:hi], self._latencies[lo:hi]
            error_times = list(self._errors)
            open_gap = now - self._last
            since_start = {
                "seconds": round(now - self.started_at, 3),
                "transactions": self.completed,
                "errors": self.error_count,
                "longest_stall_seconds": round(max(self._longest, open_gap), 3),
                "stalled_seconds": round(
                    self._stalled + (open_gap if open_gap > self.stall_threshold else 0.0), 3
                ),
                "stalls": self._stalls + (1 if open_gap > self.stall_threshold else 0),
            }
            last_error = self.last_error
        rows = _per_second(times, latencies, self.started_at, first_second, end, error_times)
        i0 = bisect_left(times, start)
        in_window = times[i0:]
        ordered = sorted(latencies[i0:])
        errors = sum(1 for t in error_times if start <= t <= end)
        longest, stalled, stalls = _gaps(in_window, start, end, self.stall_threshold)
        span = max(end - start, 1e-9)
        return {
            "clients": self.clients,
            "running": bool(self._threads) and not self._stopping.is_set(),
            "database": self.where,
            "stall_threshold_seconds": self.stall_threshold,
            "healthy": open_gap <= HEALTHY_WITHIN,
            "last_transaction_seconds_ago": round(open_gap, 3),
            "window": {
                "seconds": round(end - start, 3),
                "transactions": len(in_window),
                "per_second": round(len(in_window) / span, 1),
                "p50_ms": _ms(_quantile(ordered, 0.50)),
                "p99_ms": _ms(_quantile(ordered, 0.99)),
                "max_ms": _ms(ordered[-1] if ordered else None),
                "longest_stall_seconds": round(longest, 3),
                "stalled_seconds": round(stalled, 3),
                "stalls": stalls,
                "errors": errors,
            },
            "since_start": since_start,
            "last_error": last_error,
            "series": rows,
        }

    # --- HTTP ---

    def serve(self, port: int = 8090) -> int:
        """Answer /health and /stats on 127.0.0.1:``port`` (0: any free port) from a thread;
        returns the port. LoadError when the port cannot be bound."""
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise LoadError(f"port must be an integer from 0 to 65535, got {port!r}.")
        load = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                status, body = load.answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError as exc:
            raise LoadError(f"Cannot listen on 127.0.0.1:{port}: {exc.strerror}.") from None
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, name="load-http", daemon=True).start()
        return self.port

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body for ``path`` (what the server sends)."""
        url = urlsplit(path)
        if url.path == "/health":
            why, ago, failed = self.health()
            with self._lock:
                errors, last_error = self.error_count, self.last_error
            return (503 if why else 200), {
                "healthy": not why,
                "why": why,
                "last_transaction_seconds_ago": round(ago, 3),
                "healthy_within_seconds": HEALTHY_WITHIN,
                "recent_failed_percent": failed,
                "clients": self.clients,
                "errors": errors,
                "last_error": last_error,
            }
        if url.path == "/stats":
            query = parse_qs(url.query)
            try:
                window = float(query.get("window", ["10"])[0])
                series = int(query.get("series", ["60"])[0])
            except ValueError:
                return 400, {"error": "window (seconds) and series (a count) must be numbers."}
            if not 0 < window <= KEEP_SECONDS or not 0 <= series <= KEEP_SECONDS:
                return 400, {
                    "error": f"window must be in (0, {KEEP_SECONDS:.0f}] seconds and series "
                    f"in [0, {KEEP_SECONDS:.0f}]."
                }
            return 200, self.stats(window, series=series)
        if url.path == "/auth-failure-rate":
            rate, attempts = self.auth_failure_rate()
            return 200, {
                "value": round(rate, 2),
                "attempts": attempts,
                "window_seconds": AUTH_WINDOW,
            }
        return 404, {
            "error": f"no such page: {url.path}; try /health, /stats or /auth-failure-rate"
        }


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _gaps(times: Any, start: float, end: float, threshold: float) -> tuple[float, float, int]:
    """The longest gap with no completion in [start, end] (its edges count as bounds), the sum
    of the gaps longer than ``threshold``, and their number."""
    longest = stalled = 0.0
    stalls = 0
    previous = start
    for t in [*times, end]:
        gap = t - previous
        if gap > longest:
            longest = gap
        if gap > threshold:
            stalled += gap
            stalls += 1
        previous = t
    return longest, stalled, stalls


def _per_second(
    times: Any,
    latencies: Any,
    origin: float,
    first: int,
    end: float,
    errors: list[float],
) -> list[dict[str, Any]]:
    rows = []
    for second in range(first, int(end - origin) + 1):
        lo = bisect_left(times, origin + second)
        hi = bisect_left(times, origin + second + 1)
        worst = max(latencies[lo:hi], default=None)
        rows.append(
            {
                "second": second,
                "transactions": hi - lo,
                "max_ms": _ms(worst),
                "errors": sum(1 for t in errors if second <= t - origin < second + 1),
            }
        )
    return rows


# --- The command ---


def main(argv: list[str] | None = None, *, out: Callable[[str], None] | None = None) -> int:
    say = out or (lambda line: print(line, flush=True))
    parser = argparse.ArgumentParser(
        prog="python -m devstack load",
        description="Play the seed application against a database; /health and /stats on "
        "127.0.0.1.",
    )
    parser.add_argument("--dsn", required=True, help="libpq DSN or URL of the database to load")
    parser.add_argument(
        "--password-file", type=Path, help="file holding the password (else the DSN's, PGPASSWORD)"
    )
    parser.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--port", type=int, default=8090, help="HTTP port on 127.0.0.1")
    parser.add_argument(
        "--think", type=float, default=0.01, help="seconds between a client's transactions"
    )
    parser.add_argument(
        "--report-every", type=float, default=10.0, help="seconds between lines on stdout (0: none)"
    )
    args = parser.parse_args(argv)
    try:
        password = None
        if args.password_file is not None:
            try:
                password = args.password_file.read_text().strip()
            except OSError as exc:
                raise LoadError(f"Cannot read {args.password_file}: {exc.strerror}.") from None
        load = Load(args.dsn, args.clients, password=password, think=args.think)
        load.start()
    except LoadError as exc:
        print(f"load: {exc}", file=sys.stderr, flush=True)
        return 2
    stop = threading.Event()

    def stopping(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    try:
        port = load.serve(args.port)
    except LoadError as exc:
        load.stop()
        print(f"load: {exc}", file=sys.stderr, flush=True)
        return 2
    say(
        f"load: {load.clients} clients on {load.where} ({load.users} users); "
        f"http://127.0.0.1:{port}/health and /stats"
    )
    reported = time.monotonic()
    while not stop.wait(0.5):
        if not args.report_every or time.monotonic() - reported < args.report_every:
            continue
        reported = time.monotonic()
        s = load.stats(args.report_every, series=0)
        w, total = s["window"], s["since_start"]
        say(
            f"load: {w['per_second']:.0f} tx/s, p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, "
            f"longest stall {w['longest_stall_seconds']:.3f} s (since start "
            f"{total['longest_stall_seconds']:.3f} s, {total['stalled_seconds']:.1f} s stalled, "
            f"{total['errors']} errors)"
        )
    load.stop()
    say("load: stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
