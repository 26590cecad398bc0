"""Fill an analytics bot database (``migrations_target`` at 0016 or later) with realistic data.

Everything is generated inside PostgreSQL with set-based ``INSERT ... SELECT`` over
``generate_series``: no rows travel through Python, so two million users (about 2 GB) take
minutes. Randomness is a hash of (row key, seed, salt) via ``hashint8extended``, so the same seed
always gives the same rows whatever plan the server picks. Ids are given explicitly and the
sequences are moved past them at the end.

The shape of the data (per user, on average): about 1.5 channels, 2-3 scheduled posts with most
past ones sent, and for paying users (about 30%) one to three subscriptions with their payments
and the payment methods they were made with. Timestamps run from 2023-03-01 to the reference
day ``REFERENCE_TIME``; posts and subscriptions may reach a few weeks past it.

Only columns that exist at revision 0016 are filled; later columns keep their defaults, except
``users.email_new`` which is copied from ``email`` when the database is at 0019 or later (the
backfill revision), as it would be in production.

No Django here: this module is used by the demo, the tests and anyone with a psycopg connection.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import psycopg

APP_TABLES = (
    "plans",
    "users",
    "channels",
    "scheduled_posts",
    "sent_posts",
    "payment_methods",
    "subscriptions",
    "payments",
)
MINIMUM_REVISION = 16
BACKFILL_REVISION = 19
REFERENCE_TIME = "2025-09-17 00:00:00+00"
FIRST_SIGNUP = "2023-03-01 00:00:00+00"

PLANS = (
    # id, name, price, max_channels, created_at
    (1, "free", "0.00", 1, "2024-01-15 10:30:00+00"),
    (2, "basic", "4.99", 3, "2024-01-15 10:30:00+00"),
    (3, "pro", "14.99", 10, "2024-01-15 10:30:00+00"),
    (4, "business", "49.00", 50, "2024-05-06 09:00:00+00"),
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES = _words(
    "alex anna max maria ivan olga dmitry elena sergey kate john emma david sofia omar "
    "lena artem nika pavel yulia tom mila leo zara igor dasha nick vera oleg alina "
    "ahmed sara luis ana pedro lucas ali fatima marco nina"
)
NAME_SUFFIXES = _words("dev pro official tg bot 2000 news art ua ru x writer media live")
EMAIL_DOMAINS = _words(  # repeated entries are weights
    "gmail.com gmail.com gmail.com gmail.com mail.ru mail.ru yandex.ru outlook.com "
    "proton.me icloud.com yahoo.com hotmail.com"
)
LANGUAGES = _words("en en en en en en en en en ru ru ru ru ru uk es es de pt pt fa uz")
TOPICS = _words(
    "Crypto Tech Travel Football Recipes Startup Design Memes News Fitness Gaming Music "
    "Movies AI Finance Books Photo Science Jobs Marketing"
)
CHANNEL_SUFFIXES = _words("Digest Hub Insider Notes Weekly Club Daily Channel Updates Today")
POST_OPENERS = (
    "Breaking:",
    "Weekly digest —",
    "Tip of the day:",
    "New post!",
    "Reminder:",
    "Thread 🧵",
    "Poll results:",
    "Quick update:",
    "Don't miss this:",
    "From the archive:",
    "Sponsored:",
    "Good morning!",
)
POST_BODIES = (
    "the numbers for this week are in and they look better than expected",
    "here is what changed since our last update and why it matters to you",
    "five things we learned after testing every option for a month",
    "a short guide for beginners, saved by thousands of readers",
    "we answered your most common questions in one place",
    "the live stream starts at 18:00, link in the comments",
    "behind the scenes of how this channel is made every day",
    "our picks for the weekend, from the quick to the ambitious",
    "the full report is ready: charts, sources and our take",
    "join the discussion below and tell us what you think",
    "a mistake almost everyone makes, and how to avoid it",
    "the best of the month in one post, in case you missed it",
    "price alert: the offer ends tonight at midnight",
    "new episode out now, thirty minutes well spent",
    "we crossed a milestone thanks to every one of you",
    "a step-by-step checklist you can use today",
)
HASHTAGS = _words("#news #tips #weekly #update #guide #ai #travel #football #crypto #jobs")


def seed(
    conn: psycopg.Connection, users: int, *, seed: int = 42, replace: bool = False
) -> dict[str, int]:
    """Fill a database migrated to at least 0016 with consistent, realistic data; return row
    counts per table.

    Runs in one transaction on ``conn`` (committed when ``conn`` has no transaction open;
    otherwise a savepoint in the caller's transaction, which the caller commits). Refuses with
    ValueError a ``users`` count that is not a positive integer, a database not at revision 0016
    or later of this project, and tables that already hold data, unless ``replace=True``, which
    truncates the application's tables (RESTART IDENTITY CASCADE) first. ANALYZEs the tables.
    """
    if isinstance(users, bool) or not isinstance(users, int) or users <= 0:
        raise ValueError(f"users must be a positive integer, got {users!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}.")
    with conn.transaction():
        revision = _check_revision(conn)
        if replace:
            conn.execute(f"TRUNCATE {', '.join(APP_TABLES)} RESTART IDENTITY CASCADE")
        else:
            _check_empty(conn)
        conn.execute("SET LOCAL work_mem = '128MB'")
        gen = _Generator(conn, users=users, seed=seed, backfilled=revision >= BACKFILL_REVISION)
        counts = gen.run()
        for table in APP_TABLES:
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
            )
        conn.execute(f"ANALYZE {', '.join(APP_TABLES)}")
    return counts


def _check_revision(conn: psycopg.Connection) -> int:
    """The database's revision number; ValueError unless it is a revision >= 0016 of ours."""
    row = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        raise ValueError(
            "The database has no alembic_version table: it is not migrated with this project. "
            "Run `alembic -c migrations_target/alembic.ini upgrade 0016` on it first."
        )
    versions = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version").fetchall()]
    if len(versions) != 1:
        raise ValueError(
            f"The database should be at exactly one revision, found {versions or 'none'}. "
            "Run `alembic -c migrations_target/alembic.ini upgrade 0016` on it first."
        )
    version = versions[0]
    if not re.fullmatch(r"\d{4}", version):
        raise ValueError(
            f"The database is at revision {version!r}, which is not a revision of this project."
        )
    if int(version) < MINIMUM_REVISION:
        raise ValueError(
            f"The database is at revision {version}; seeding needs revision "
            f"{MINIMUM_REVISION:04d} or later. Run `alembic -c migrations_target/alembic.ini "
            f"upgrade {MINIMUM_REVISION:04d}` first."
        )
    return int(version)


def _check_empty(conn: psycopg.Connection) -> None:
    filled = [
        table
        for table in APP_TABLES
        if conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0]  # type: ignore[index]
    ]
    if filled:
        raise ValueError(
            f"The database already holds data (in {', '.join(filled)}); refusing to add more. "
            "Pass replace=True to truncate the tables and seed afresh."
        )


def _text_array(values: Sequence[str]) -> str:
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"ARRAY[{quoted}]::text[]"


def _pick(values: Sequence[str], uniform: str) -> str:
    """SQL picking one of ``values`` with the [0, 1) expression ``uniform``."""
    return f"({_text_array(values)})[1 + floor({uniform} * {len(values)})::int]"


class _Generator:
    """The INSERT statements. Every random choice is ``self.u(key, salt)``: uniform in [0, 1)."""

    def __init__(self, conn: psycopg.Connection, *, users: int, seed: int, backfilled: bool):
        self.conn = conn
        self.users = users
        self.seed = seed
        self.backfilled = backfilled

    def u(self, key: str, salt: int) -> str:
        hash_seed = self.seed * 1000 + salt
        return (
            f"((hashint8extended(({key})::bigint, {hash_seed}) & 2147483647)::float8 "
            "/ 2147483648.0)"
        )

    def insert(self, sql: str) -> int:
        cur = self.conn.execute(sql)
        return cur.rowcount

    def run(self) -> dict[str, int]:
        return {
            "plans": self.plans(),
            "users": self.insert_users(),
            "channels": self.channels(),
            "scheduled_posts": self.scheduled_posts(),
            "sent_posts": self.sent_posts(),
            "payment_methods": self.payment_methods(),
            "subscriptions": self.subscriptions(),
            "payments": self.payments(),
        }

    def plans(self) -> int:
        values = ", ".join(
            f"({pid}, '{name}', {price}, {channels}, '{created}')"
            for pid, name, price, channels, created in PLANS
        )
        return self.insert(
            f"INSERT INTO plans (id, name, price, max_channels, created_at) VALUES {values}"
        )

    def insert_users(self) -> int:
        u = self.u
        n = self.users
        # Signups spread from FIRST_SIGNUP to the day before the reference day, in id order.
        created = (
            f"timestamptz '{FIRST_SIGNUP}' + ((g - 1)::float8 / {n} "
            f"* extract(epoch FROM timestamptz '{REFERENCE_TIME}' - timestamptz '{FIRST_SIGNUP}' "
            f"- interval '2 days') + {u('g', 1)} * 86400) * interval '1 second'"
        )
        name = _pick(FIRST_NAMES, u("g", 2))
        username = (
            f"CASE WHEN {u('g', 3)} < 0.22 THEN NULL "
            f"WHEN {u('g', 4)} < 0.5 THEN {name} || '_' || {_pick(NAME_SUFFIXES, u('g', 5))} "
            f"|| '_' || g ELSE {name} || g END"
        )
        email = (
            f"CASE WHEN {u('g', 6)} < 0.14 THEN NULL "
            f"ELSE {name} || '.' || (g * 7 + floor({u('g', 7)} * 7)::int) || '@' "
            f"|| {_pick(EMAIL_DOMAINS, u('g', 8))} END"
        )
        plan = (
            f"CASE WHEN {u('g', 9)} < 0.70 THEN 1 WHEN {u('g', 9)} < 0.88 THEN 2 "
            f"WHEN {u('g', 9)} < 0.97 THEN 3 ELSE 4 END"
        )
        columns = "id, telegram_id, username, plan_id, created_at, email, language_code, is_active"
        values = (
            f"g, 100000000 + g * 3571 + floor({u('g', 10)} * 3571)::bigint, {username}, {plan}, "
            f"{created}, {email}, {_pick(LANGUAGES, u('g', 11))}, {u('g', 12)} < 0.93"
        )
        if self.backfilled:
            columns += ", email_new"
            values += f", {email}"  # the same hash, so the same value: the backfill's result
        return self.insert(
            f"INSERT INTO users ({columns}) SELECT {values} "
            f"FROM generate_series(1, {n}::bigint) AS g"
        )

    def channels(self) -> int:
        u = self.u
        # Free users: one channel (8% none yet); paying users: more, within their plan's limit.
        count = (
            f"CASE us.plan_id WHEN 1 THEN CASE WHEN {u('us.id', 20)} < 0.08 THEN 0 ELSE 1 END "
            f"WHEN 2 THEN 1 + floor({u('us.id', 21)} * 3)::int "
            f"WHEN 3 THEN 2 + floor({u('us.id', 21)} * 4)::int "
            f"ELSE 3 + floor({u('us.id', 21)} * 6)::int END"
        )
        key = "us.id::bigint * 16 + k"
        topic = _pick(TOPICS, u(key, 22))
        suffix = _pick(CHANNEL_SUFFIXES, u(key, 23))
        # A channel is added some time between signup and the reference day (earlier ones first).
        created = (
            f"us.created_at + (timestamptz '{REFERENCE_TIME}' - us.created_at) "
            f"* ((k - 1 + {u(key, 24)}) / {count} * 0.6)"
        )
        return self.insert(
            "INSERT INTO channels (id, user_id, title, username, created_at) "
            "SELECT row_number() OVER (ORDER BY user_id, k), user_id, title, "
            "CASE WHEN public THEN lower(replace(title, ' ', '_')) || '_' || user_id || k END, "
            "created_at FROM ("
            f"SELECT us.id AS user_id, k, {topic} || ' ' || {suffix} AS title, "
            f"{u(key, 25)} < 0.7 AS public, {created} AS created_at "
            f"FROM users AS us CROSS JOIN LATERAL generate_series(1, {count}) AS k) AS c"
        )

    def scheduled_posts(self) -> int:
        u = self.u
        # Posts per channel: 10% of channels have none yet; the others a skewed count (most post
        # a little, a few a lot): 1 + an exponential, mean 1.5, at most 24.
        count = (
            f"CASE WHEN {u('ch.id', 37)} < 0.10 THEN 0 "
            f"ELSE least(24, 1 + floor(-ln(1 - {u('ch.id', 30)}) * 0.9)::int) END"
        )
        key = "ch.id::bigint * 32 + k"
        # Spread over the channel's life, the last ones up to three weeks past the reference day.
        scheduled = (
            f"ch.created_at + (timestamptz '{REFERENCE_TIME}' + interval '21 days' "
            f"- ch.created_at) * ((k - 1 + {u(key, 31)}) / {count})"
        )
        text = (
            f"{_pick(POST_OPENERS, u(key, 32))} || ' ' || {_pick(POST_BODIES, u(key, 33))} "
            f"|| '. ' || {_pick(HASHTAGS, u(key, 34))}"
        )
        status = (
            f"CASE WHEN scheduled_at > timestamptz '{REFERENCE_TIME}' THEN "
            f"CASE WHEN r < 0.05 THEN 'cancelled' ELSE 'pending' END "
            "WHEN r < 0.05 THEN 'failed' WHEN r < 0.12 THEN 'cancelled' ELSE 'sent' END"
        )
        return self.insert(
            "INSERT INTO scheduled_posts "
            "(id, channel_id, post_text, scheduled_at, created_at, status) "
            "SELECT row_number() OVER (ORDER BY channel_id, k), channel_id, post_text, "
            "scheduled_at, greatest(channel_created, scheduled_at - lead_time), "
            f"{status} FROM ("
            "SELECT ch.id AS channel_id, k, ch.created_at AS channel_created, "
            f"{text} AS post_text, "
            f"{scheduled} AS scheduled_at, {u(key, 35)} * interval '3 days' AS lead_time, "
            f"{u(key, 36)} AS r "
            f"FROM channels AS ch CROSS JOIN LATERAL generate_series(1, {count}) AS k) AS p"
        )

    def sent_posts(self) -> int:
        u = self.u
        # Telegram message ids grow with time; sent a few seconds after the scheduled time.
        return self.insert(
            "INSERT INTO sent_posts (id, scheduled_post_id, message_id, sent_at) "
            "SELECT row_number() OVER (ORDER BY sp.id), sp.id, "
            "(extract(epoch FROM sp.scheduled_at - timestamptz '2023-01-01 00:00:00+00')::bigint "
            f"/ 600) * 8 + floor({u('sp.id', 40)} * 8)::bigint, "
            f"sp.scheduled_at + {u('sp.id', 41)} * interval '90 seconds' "
            "FROM scheduled_posts AS sp WHERE sp.status = 'sent'"
        )

    def _has_paid(self, user: str) -> str:
        """Free users who once paid (and churned): they keep a payment method and a subscription."""
        return f"({user}.plan_id > 1 OR {self.u(user + '.id', 50)} < 0.08)"

    def payment_methods(self) -> int:
        u = self.u
        count = (
            f"CASE WHEN us.plan_id = 1 THEN 1 WHEN {u('us.id', 51)} < 0.75 THEN 1 "
            f"WHEN {u('us.id', 51)} < 0.97 THEN 2 ELSE 3 END"
        )
        key = "us.id::bigint * 4 + k"
        kind = (
            f"CASE WHEN {u(key, 52)} < 0.55 THEN 'card' WHEN {u(key, 52)} < 0.80 "
            f"THEN 'telegram_stars' WHEN {u(key, 52)} < 0.92 THEN 'paypal' ELSE 'crypto' END"
        )
        created = (
            f"least(timestamptz '{REFERENCE_TIME}' - interval '1 hour', us.created_at "
            f"+ {u(key, 53)} * interval '20 days' + (k - 1) * interval '120 days')"
        )
        return self.insert(
            "INSERT INTO payment_methods "
            "(id, user_id, method_type, provider, last4, is_default, created_at) "
            "SELECT row_number() OVER (ORDER BY user_id, k), user_id, method_type, "
            "CASE method_type WHEN 'card' THEN CASE WHEN r < 0.8 THEN 'stripe' ELSE 'yookassa' "
            "END WHEN 'telegram_stars' THEN 'telegram' WHEN 'paypal' THEN 'paypal' "
            "ELSE 'cryptobot' END, "
            "CASE WHEN method_type = 'card' THEN lpad(floor(r * 10000)::int::text, 4, '0') END, "
            "k = 1, created_at FROM ("
            f"SELECT us.id AS user_id, k, {kind} AS method_type, {u(key, 54)} AS r, "
            f"{created} AS created_at FROM users AS us "
            f"CROSS JOIN LATERAL generate_series(1, {count}) AS k "
            f"WHERE {self._has_paid('us')}) AS m"
        )

    def subscriptions(self) -> int:
        u = self.u
        # Paying users: one to three subscriptions, the last one current; churned free users:
        # one that ended. Each starts after the previous one ended.
        count = (
            f"CASE WHEN us.plan_id = 1 THEN 1 WHEN {u('us.id', 60)} < 0.10 THEN 3 "
            f"WHEN {u('us.id', 60)} < 0.35 THEN 2 ELSE 1 END"
        )
        key = "us.id::bigint * 4 + k"
        span = f"(timestamptz '{REFERENCE_TIME}' - us.created_at)"
        started = f"us.created_at + {span} * ((k - 1 + 0.1 * {u(key, 61)}) / {count})"
        # A past subscription ran for one to twelve months, ending before the next one started.
        ended = (
            f"least(us.created_at + {span} * ((k - 0.05) / {count}), "
            f"{started} + (1 + floor({u(key, 64)} * 12)) * interval '30 days')"
        )
        return self.insert(
            "INSERT INTO subscriptions "
            "(id, user_id, plan_id, status, started_at, expires_at, created_at) "
            "SELECT row_number() OVER (ORDER BY user_id, k), user_id, "
            "CASE WHEN is_current THEN user_plan WHEN r < 0.6 THEN 2 ELSE 3 END, "
            "CASE WHEN NOT is_current THEN CASE WHEN r < 0.7 THEN 'expired' ELSE 'cancelled' END "
            "WHEN r < 0.90 THEN 'active' WHEN r < 0.96 THEN 'past_due' ELSE 'trial' END, "
            "started_at, "
            "CASE WHEN NOT is_current THEN ended_at "
            f"WHEN r < 0.90 THEN timestamptz '{REFERENCE_TIME}' + (1 + r2 * 29) * interval '1 day' "
            f"WHEN r < 0.96 THEN greatest(started_at + interval '1 day', "
            f"timestamptz '{REFERENCE_TIME}' - (1 + r2 * 5) * interval '1 day') "
            f"ELSE timestamptz '{REFERENCE_TIME}' + (1 + r2 * 6) * interval '1 day' END, "
            "started_at FROM ("
            f"SELECT us.id AS user_id, k, us.plan_id AS user_plan, "
            f"us.plan_id > 1 AND k = {count} AS is_current, "
            f"{started} AS started_at, {ended} AS ended_at, "
            f"{u(key, 62)} AS r, {u(key, 63)} AS r2 "
            f"FROM users AS us CROSS JOIN LATERAL generate_series(1, {count}) AS k "
            f"WHERE {self._has_paid('us')}) AS s"
        )

    def payments(self) -> int:
        u = self.u
        # One to four payments per subscription (none during a trial), paid with the user's
        # default method in the user's currency; a past-due subscription's last payment failed.
        count = f"CASE WHEN s.status = 'trial' THEN 0 ELSE 1 + floor({u('s.id', 70)} * 4)::int END"
        key = "s.id::bigint * 8 + k"
        until = f"least(s.expires_at, timestamptz '{REFERENCE_TIME}')"
        created = (
            f"s.started_at + ({until} - s.started_at) * ((k - 1 + 0.5 * {u(key, 71)}) / {count})"
        )
        currency = (
            f"CASE WHEN {u('s.user_id', 72)} < 0.65 THEN 'USD' "
            f"WHEN {u('s.user_id', 72)} < 0.85 THEN 'EUR' ELSE 'RUB' END"
        )
        status = (
            f"CASE WHEN s.status = 'past_due' AND k = {count} THEN 'failed' "
            f"WHEN {u(key, 73)} < 0.03 THEN 'failed' WHEN {u(key, 73)} < 0.045 THEN 'refunded' "
            "ELSE 'succeeded' END"
        )
        return self.insert(
            "INSERT INTO payments (id, user_id, amount, status, created_at, currency, "
            "subscription_id, payment_method_id) "
            "SELECT row_number() OVER (ORDER BY subscription_id, k), user_id, "
            "CASE currency WHEN 'EUR' THEN round(price * 0.92, 2) "
            "WHEN 'RUB' THEN round(price * 90) ELSE price END, status, "
            "created_at, currency, subscription_id, payment_method_id FROM ("
            "SELECT s.id AS subscription_id, k, s.user_id, pl.price, "
            f"{status} AS status, "
            f"{created} AS created_at, {currency} AS currency, pm.id AS payment_method_id "
            "FROM subscriptions AS s JOIN plans AS pl ON pl.id = s.plan_id "
            "LEFT JOIN payment_methods AS pm ON pm.user_id = s.user_id AND pm.is_default "
            f"CROSS JOIN LATERAL generate_series(1, {count}) AS k) AS p"
        )
