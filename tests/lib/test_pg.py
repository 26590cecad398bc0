"""lib/pg.py: what a DSN may say, what is shown of it, where it goes, how a password travels to
the server and to the client tools, and what a failure is called. Connections go to the session's
real PostgreSQL cluster (scram over TCP). The refusals of a server that asks for a clear-text
password are in tests/databases/test_secret_scope.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import SilentServer

from dashboard.lib import pg
from dashboard.lib.secrets import Password
from devstack.cluster import free_port

# --- parse_dsn ---


def test_parse_dsn_reads_keywords_and_urls_alike():
    keywords = pg.parse_dsn("host=db.internal port=6543 dbname=app user=app sslmode=require")
    url = pg.parse_dsn("postgresql://app@db.internal:6543/app?sslmode=require")
    assert keywords == url
    assert url == {
        "host": "db.internal",
        "port": "6543",
        "dbname": "app",
        "user": "app",
        "sslmode": "require",
    }


@pytest.mark.parametrize("dsn", ["", "   \n"])
def test_parse_dsn_refuses_an_empty_string(dsn):
    with pytest.raises(pg.BadDsn, match="empty"):
        pg.parse_dsn(dsn)


@pytest.mark.parametrize(
    "dsn,why",
    [
        ("host=db hunter2 dbname=app", "a word has no = after it"),
        ("host='hunter2 dbname=app", "a quoted value is not closed"),
        ("host=db dbname=app hunter2=x", "it sets an option libpq does not know"),
        ("postgresql://db/app?hunter2=x", "the postgresql:// URL is malformed"),
        ("postgresql://db/hunter2%zz", "the postgresql:// URL is malformed"),
    ],
)
def test_parse_dsn_says_why_it_cannot_parse_without_quoting_the_text(dsn, why):
    with pytest.raises(pg.BadDsn) as refused:
        pg.parse_dsn(dsn)
    message = str(refused.value)
    assert why in message and pg.DSN_EXAMPLE in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "dsn",
    [
        "host=db dbname=app password=hunter2",
        "postgresql://app:hunter2@db/app",
        "postgresql://app@db/app?password=hunter2",
    ],
)
def test_parse_dsn_refuses_a_password_in_any_form(dsn):
    with pytest.raises(pg.BadDsn, match="contains a password") as refused:
        pg.parse_dsn(dsn)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    "option", ["passfile", "service", "sslkey", "sslcert", "require_auth", "krbsrvname"]
)
def test_parse_dsn_refuses_options_that_read_local_files_or_decide_authentication(option):
    with pytest.raises(pg.BadDsn, match=f"may not set {option}:"):
        pg.parse_dsn(f"host=db dbname=app {option}=x")


def test_parse_dsn_names_every_refused_option():
    with pytest.raises(pg.BadDsn, match="may not set passfile, service:"):
        pg.parse_dsn("host=db dbname=app service=x passfile=/tmp/p")


@pytest.mark.parametrize("dsn", ["host=db user=app", "postgresql://app@db", "dbname="])
def test_parse_dsn_refuses_a_dsn_without_a_database(dsn):
    with pytest.raises(pg.BadDsn, match="names no database"):
        pg.parse_dsn(dsn)


# --- redact and echo ---


@pytest.mark.parametrize(
    "text,shown",
    [
        ("host=db dbname=app user=app", "host=db dbname=app user=app"),
        ("postgres://app:hunter2@db/app", "postgres://app@db/app"),
        ("host=db sslpassword=hunter2 dbname=app", "host=db dbname=app"),
        ("host=db passwd=hunter2 pwd=hunter2 dbname=app", "host=db dbname=app"),
        ("postgresql://db/app?x=1&sslpassword=hunter2", "postgresql://db/app?x=1&sslpassword=***"),
        ("host=db password=*** dbname=app", "host=db password=*** dbname=app"),
        (
            'connection to "host=db password=hunter2 dbname=app" failed: timeout',
            'connection to "host=db dbname=app" failed: timeout',
        ),
    ],
)
def test_redact_leaves_no_password_in_a_dsn_or_a_text_quoting_one(text, shown):
    assert pg.redact(text) == shown


def test_echo_keeps_only_the_allowed_options():
    shown = pg.echo("host=db dbname=app password=hunter2 passfile=/tmp/p user=app")
    assert pg.parse_dsn(shown) == {"host": "db", "dbname": "app", "user": "app"}


def test_echo_shows_nothing_of_a_dsn_that_does_not_parse():
    assert pg.echo("host=db hunter2 dbname=app") == ""


# --- target ---


@pytest.mark.parametrize(
    "dsn,where",
    [
        ("host=db.internal port=6543 dbname=app user=app", "app@db.internal:6543/app"),
        ("postgresql://app@db.internal:6543/app", "app@db.internal:6543/app"),
        ("host=db.internal dbname=app user=app", "app@db.internal:5432/app"),
        ("dbname=app user=app", "app@(local socket):5432/app"),
        ("host=db hostaddr=10.0.0.5 dbname=app", "@db [10.0.0.5]:5432/app"),
    ],
)
def test_target_is_one_canonical_line(dsn, where):
    assert pg.target(dsn) == where


def test_target_refuses_what_parse_dsn_refuses():
    with pytest.raises(pg.BadDsn):
        pg.target("host=db dbname=app password=x")


# --- host_refusal (the allow-list's cases are in test_secret_scope.py) ---


def test_a_listed_socket_folder_is_allowed():
    dsn = "host=/var/run/postgresql dbname=app"
    assert pg.host_refusal(dsn, ["/var/run/postgresql"]) == ""


def test_no_host_is_the_local_socket_and_needs_a_listed_folder():
    assert "socket folder (local socket)" in pg.host_refusal("dbname=app", ["10.0.0.0/8"])


def test_a_hostaddr_must_be_an_address_under_an_allow_list():
    refusal = pg.host_refusal("host=db hostaddr=db.internal dbname=app", ["10.0.0.0/8"])
    assert refusal == "hostaddr must be an IP address (RUNWAY_ALLOWED_DB_HOSTS is set)."


def test_a_refusal_names_the_address_outside_the_networks():
    refusal = pg.host_refusal("host=db hostaddr=10.0.0.5,8.8.8.8 dbname=app", ["10.0.0.0/8"])
    assert "8.8.8.8" in refusal and "10.0.0.5" not in refusal


def test_a_host_that_does_not_resolve_cannot_be_checked():
    refusal = pg.host_refusal("host=nowhere.invalid dbname=app", ["10.0.0.0/8"])
    assert "does not resolve here" in refusal


def test_a_suffix_rule_matches_case_and_trailing_dot_alike():
    assert pg.host_refusal("host=PG1.DB.Internal. dbname=app", ["*.db.internal"]) == ""
    assert pg.host_refusal("host=db.internal.evil dbname=app", ["*.db.internal"]) != ""


# --- login_params ---


def test_without_a_password_no_password_of_the_workers_is_used():
    assert pg.login_params(None) == {"password": "", "passfile": pg.NO_PASSFILE}
    assert pg.login_params("") == {"password": "", "passfile": pg.NO_PASSFILE}


def test_a_password_goes_with_require_auth():
    assert pg.login_params("pw") == {
        "password": "pw",
        "passfile": pg.NO_PASSFILE,
        "require_auth": "scram-sha-256",
    }


def test_a_references_password_carries_its_own_require_auth():
    params = pg.login_params(Password("pw", require_auth="scram-sha-256,md5"))
    assert params["require_auth"] == "scram-sha-256,md5"


def test_the_password_file_is_a_path_that_cannot_exist():
    assert Path(pg.NO_PASSFILE).parent.is_char_device()  # /dev/null holds no files


# --- connect and classify, against the real cluster ---


def dsn_of(cluster, dbname="postgres", **extra):
    words = [f"host={cluster.host}", f"port={cluster.port}", f"dbname={dbname}", "user=postgres"]
    return " ".join(words + [f"{k}={v}" for k, v in extra.items()])


def failure(dsn, password, timeout=5):
    with pytest.raises(pg.OperationalError) as failed:
        pg.connect(dsn, password, timeout=timeout).close()
    return failed.value


def test_connect_logs_in_with_scram_and_names_itself(pg_cluster):
    with pg.connect(dsn_of(pg_cluster), Password(pg_cluster.password)) as conn:
        row = conn.execute("SELECT current_setting('application_name')").fetchone()
    assert row == ("runway",)


def test_a_wrong_password_is_auth_failed(pg_cluster):
    assert pg.classify(failure(dsn_of(pg_cluster), Password("wrong"))) == "auth_failed"


def test_no_password_is_auth_failed_even_with_pgpassword_set(pg_cluster, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", pg_cluster.password)  # the worker's own: never used
    assert pg.classify(failure(dsn_of(pg_cluster), None)) == "auth_failed"


def test_a_method_the_reference_does_not_allow_is_auth_method(pg_cluster):
    exc = failure(dsn_of(pg_cluster), Password(pg_cluster.password, require_auth="md5"))
    assert pg.classify(exc) == "auth_method"


def test_a_missing_database_is_no_database(pg_cluster):
    exc = failure(dsn_of(pg_cluster, "no_such_db"), Password(pg_cluster.password))
    assert pg.classify(exc) == "no_database"


def test_a_closed_port_is_unreachable():
    exc = failure(f"host=127.0.0.1 port={free_port()} dbname=app user=app", Password("pw"))
    assert pg.classify(exc) == "unreachable"


def test_a_missing_socket_folder_is_unreachable(tmp_path):
    exc = failure(f"host={tmp_path / 'none'} dbname=app user=app", None)
    assert pg.classify(exc) == "unreachable"


def test_a_server_that_never_answers_is_timeout():
    server = SilentServer()
    try:
        exc = failure(f"host=127.0.0.1 port={server.port} dbname=app user=app", None, timeout=2)
    finally:
        server.close()
    assert pg.classify(exc) == "timeout"


def test_anything_else_is_error():
    assert pg.classify(RuntimeError("disk on fire")) == "error"


def test_every_problem_has_a_message():
    problems = {"auth_failed", "auth_method", "no_database", "unreachable", "timeout", "error"}
    assert problems <= set(pg.PROBLEM_MESSAGES)


# --- client_tool ---


@pytest.fixture
def tool_dirs(tmp_path, monkeypatch):
    """Installed client tools of majors 14 and 16 (empty files: only their paths matter)."""
    for major in ("14", "16", "not-a-version"):
        (tmp_path / major / "bin").mkdir(parents=True)
        (tmp_path / major / "bin" / "pg_dump").touch()
    monkeypatch.setattr(pg, "_TOOL_DIRS", tmp_path)
    return tmp_path


def test_client_tool_takes_the_servers_major(tool_dirs):
    assert pg.client_tool("pg_dump", 140011) == str(tool_dirs / "14" / "bin" / "pg_dump")


def test_client_tool_takes_the_oldest_newer_major_when_the_same_is_missing(tool_dirs):
    assert pg.client_tool("pg_dump", 150004) == str(tool_dirs / "16" / "bin" / "pg_dump")


def test_client_tool_falls_back_to_path_for_a_newer_server_or_none(tool_dirs, monkeypatch):
    bin_dir = tool_dirs / "path"
    bin_dir.mkdir()
    (bin_dir / "pg_dump").touch(mode=0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert pg.client_tool("pg_dump", 170000) == str(bin_dir / "pg_dump")
    assert pg.client_tool("pg_dump") == str(bin_dir / "pg_dump")


def test_client_tool_says_how_to_install_a_missing_tool(tool_dirs, monkeypatch):
    monkeypatch.setenv("PATH", str(tool_dirs / "empty"))
    with pytest.raises(pg.ToolFailed, match=r"pg_restore is not installed \(apt-get install"):
        pg.client_tool("pg_restore", 150000)


def test_the_real_tool_is_of_the_real_servers_major(pg_cluster):
    with pg.connect(dsn_of(pg_cluster), Password(pg_cluster.password)) as conn:
        version = int(conn.execute("SHOW server_version_num").fetchone()[0])
    tool = pg.client_tool("pg_dump", version)
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True).stdout
    assert f" {version // 10000}." in out


# --- tool_env ---


def test_tool_env_passes_none_of_the_workers_secrets(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret")
    monkeypatch.setenv("RUNWAY_BACKUP_PASSPHRASE", "worker-secret")
    monkeypatch.setenv("PGPASSWORD", "worker-secret")
    monkeypatch.setenv("LC_MESSAGES", "C")
    env = pg.tool_env(None)
    assert "worker-secret" not in env.values()
    assert env["PATH"] == os.environ["PATH"] and env["LC_MESSAGES"] == "C"
    assert env["PGPASSFILE"] == pg.NO_PASSFILE
    assert not {"PGPASSWORD", "PGREQUIREAUTH", "LD_LIBRARY_PATH"} & set(env)


def test_tool_env_sends_the_password_with_its_require_auth():
    env = pg.tool_env(Password("pw", require_auth="scram-sha-256,md5"), options="-c x=1")
    assert env["PGPASSWORD"] == "pw" and env["PGREQUIREAUTH"] == "scram-sha-256,md5"
    assert env["PGOPTIONS"] == "-c x=1"
    assert pg.tool_env("pw")["PGREQUIREAUTH"] == "scram-sha-256"


def test_tool_env_points_the_tools_at_a_libpq_that_knows_require_auth():
    folder = Path(pg.tool_env("pw")["LD_LIBRARY_PATH"].split(":")[0])
    libpq = (folder / "libpq.so.5").resolve()
    assert libpq.name.startswith("libpq") and libpq.parent.name == "psycopg_binary.libs"


def test_the_tools_log_in_with_scram_through_that_libpq(pg_cluster):
    out = pg.psql(dsn_of(pg_cluster), Password(pg_cluster.password), "SELECT 40 + 2")
    assert out.strip() == "42"


def test_the_tools_refuse_a_method_the_reference_does_not_allow(pg_cluster):
    # Debian 12's own libpq 15 ignores PGREQUIREAUTH and would log in: this proves the tools
    # load the bundled libpq.
    with pytest.raises(pg.ToolFailed, match="authentication method requirement") as failed:
        pg.psql(dsn_of(pg_cluster), Password(pg_cluster.password, require_auth="md5"), "SELECT 1")
    assert not failed.value.transient and pg_cluster.password not in str(failed.value)


# --- explain_tool (a permission refusal is in tests/backups/test_faults.py) ---


def test_explain_tool_keeps_the_error_lines_without_the_tools_prefix():
    stderr = (
        "pg_restore: connecting to database for restore\n"
        'pg_restore: error: could not execute query: ERROR:  relation "t" already exists\n'
        "Command was: CREATE TABLE t ();\n"
    )
    failed = pg.explain_tool("pg_restore", 1, stderr)
    assert str(failed) == (
        'pg_restore failed: could not execute query: ERROR: relation "t" already exists'
    )
    assert failed.tool == "pg_restore" and not failed.transient


def test_explain_tool_uses_every_line_when_none_says_error():
    failed = pg.explain_tool("psql", 3, "psql:<stdin>:1: something odd\nand more\n")
    assert str(failed) == "psql failed: psql:<stdin>:1: something odd; and more"


def test_explain_tool_keeps_at_most_three_lines():
    stderr = "".join(f"pg_dump: error: failure {n}\n" for n in range(5))
    assert str(pg.explain_tool("pg_dump", 1, stderr)) == (
        "pg_dump failed: failure 0; failure 1; failure 2"
    )


def test_explain_tool_keeps_at_most_600_characters():
    summary = str(pg.explain_tool("pg_dump", 1, "pg_dump: error: " + "x" * 1000))
    assert summary == "pg_dump failed: " + "x" * 600


def test_explain_tool_redacts_a_password_the_tool_quoted():
    stderr = 'pg_dump: error: invalid connection string "host=db password=hunter2 dbname=x"'
    assert "hunter2" not in str(pg.explain_tool("pg_dump", 1, stderr))


def test_explain_tool_names_a_signal_or_an_exit_code_when_the_tool_said_nothing():
    assert str(pg.explain_tool("pg_dump", -9, "")) == "pg_dump failed: killed by signal 9"
    assert str(pg.explain_tool("pg_dump", 3, "\n")) == "pg_dump failed: exit 3"


@pytest.mark.parametrize(
    "stderr",
    [
        'pg_dump: error: connection to server at "db" (10.0.0.5), port 5432 failed: '
        "Connection refused",
        "pg_dump: error: query failed: server closed the connection unexpectedly",
        "pg_dump: error: connection to server failed: FATAL: the database system is starting up",
        "pg_dump: error: connection failed: FATAL: sorry, too many connections already",
    ],
)
def test_explain_tool_calls_a_lost_or_busy_server_transient(stderr):
    assert pg.explain_tool("pg_dump", 1, stderr).transient


@pytest.mark.parametrize(
    "stderr",
    [
        'pg_dump: error: connection to server at "db" failed: FATAL: password authentication '
        'failed for user "app"',
        'pg_dump: error: connection to server at "db" failed: authentication method requirement '
        '"scram-sha-256" failed: server requested a cleartext password',
    ],
)
def test_explain_tool_never_calls_a_refused_login_transient(stderr):
    assert not pg.explain_tool("pg_dump", 1, stderr).transient
