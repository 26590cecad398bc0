"""Production refuses to run insecure: every start (manage.py, gunicorn, a Celery worker, beat)
stops on a missing, short or published secret key, and the README's production settings pass
``check --deploy`` clean. Real processes; none of it needs a database."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks
from helpers import ROOT

from dashboard.checks import secret_key_problem
from devstack.cluster import free_port

OLD_FALLBACK_KEY = "insecure-demo-key-set-RUNWAY_SECRET_KEY-in-production"
NOWHERE = "postgresql://runway:pw@127.0.0.1:1/runway"  # nothing listens: no check connects


def clean_env(**settings: str) -> dict[str, str]:
    """This machine's environment without any of Runway's settings, plus ``settings``."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RUNWAY_")
        and k not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CELERY_BROKER_URL"}
        and k != "DJANGO_ALLOW_ASYNC_UNSAFE"  # the browser tests' (check --deploy refuses it)
    }
    return {**keep, "DATABASE_URL": NOWHERE, **settings}


def run(argv: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run([sys.executable, "manage.py", *args], env)


def test_check_refuses_a_missing_key_with_debug_off():
    done = manage("check", env=clean_env(RUNWAY_DEBUG="0"))

    assert done.returncode != 0
    assert "(runway.E001)" in done.stderr and "RUNWAY_SECRET_KEY is not set" in done.stderr


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "RUNWAY_SECRET_KEY is not set"),
        ("s3cr3t-but-short", "is 16 characters long; it needs at least 50"),
        (OLD_FALLBACK_KEY, "published demo or placeholder key"),
        ("django-insecure-" + "x1y2z3" * 10, "published demo or placeholder key"),
    ],
)
def test_the_check_refuses_an_empty_short_or_published_key_with_debug_off(settings, key, problem):
    # The same check the processes above and below run, in this process: one real `check`
    # process per entry point is enough to show it runs there.
    settings.DEBUG, settings.SECRET_KEY = False, key

    errors = checks.run_checks(tags=[checks.Tags.security])

    assert [e.id for e in errors if e.id.startswith("runway.")] == ["runway.E001"]
    assert problem in next(e.msg for e in errors if e.id == "runway.E001")


def test_migrate_refuses_too():
    done = manage("migrate", "--noinput", env=clean_env(RUNWAY_DEBUG="0"))

    assert done.returncode != 0 and "RUNWAY_SECRET_KEY is not set" in done.stderr


def test_with_debug_on_a_missing_key_is_only_a_warning():
    done = manage("check", env=clean_env(RUNWAY_DEBUG="1"))

    assert done.returncode == 0, done.stderr
    assert "(runway.W001) RUNWAY_SECRET_KEY is not set" in done.stderr


def test_a_key_file_is_read_like_the_key(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(secrets.token_urlsafe(50) + "\n")

    done = manage("check", env=clean_env(RUNWAY_DEBUG="0", RUNWAY_SECRET_KEY_FILE=str(key_file)))

    assert done.returncode == 0, done.stderr


def readme_production_env(tmp_path: Path) -> dict[str, str]:
    """The README's production environment block, its secret files made up in ``tmp_path``."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n# Production environment[^\n]*\n(.*?)```", readme, re.S)
    assert block, "the README has no production environment block"
    values = {
        "RUNWAY_SECRET_KEY_FILE": secrets.token_urlsafe(50),
        "DATABASE_URL_FILE": NOWHERE,
        "CELERY_BROKER_URL_FILE": "rediss://:pw@127.0.0.1:1/0?ssl_cert_reqs=required",
    }
    env = {}
    for line in block.group(1).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, value = line.partition("=")
        if name.endswith("_FILE"):
            path = tmp_path / name.lower()
            path.write_text(values.get(name, secrets.token_urlsafe(24)) + "\n")
            value = str(path)
        env[name] = value
    return env


def test_the_readmes_production_settings_pass_check_deploy_clean(tmp_path):
    production = readme_production_env(tmp_path)
    assert production["RUNWAY_DEBUG"] == "0" and "RUNWAY_SECRET_KEY_FILE" in production
    env = clean_env(**production)
    del env["DATABASE_URL"]  # from the README's DATABASE_URL_FILE

    done = manage("check", "--deploy", env=env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout
    assert done.stderr == ""


def test_gunicorn_refuses_to_serve_without_a_key():
    done = run(
        [sys.executable, "-m", "gunicorn", "dashboard.wsgi", "--bind", f"127.0.0.1:{free_port()}"]
        + ["--workers", "2"],
        clean_env(RUNWAY_DEBUG="0"),
        timeout=60,
    )

    # Gunicorn stops, within the timeout, instead of booting workers again and again.
    assert done.returncode != 0 and "Worker failed to boot" in done.stderr
    assert "Runway's web server refuses to start" in done.stderr
    assert "RUNWAY_SECRET_KEY is not set" in done.stderr


def test_a_celery_worker_refuses_to_start_with_a_short_key():
    done = run(
        [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "--pool", "solo"],
        clean_env(RUNWAY_DEBUG="0", RUNWAY_SECRET_KEY="short"),
        timeout=60,
    )

    assert done.returncode != 0
    assert "Runway's Celery worker refuses to start" in done.stderr
    assert "is 5 characters long" in done.stderr


def test_celery_beat_refuses_to_start_with_the_old_demo_key(tmp_path):
    done = run(
        [sys.executable, "-m", "celery", "-A", "dashboard", "beat"]
        # A file scheduler: the database one would stop first, at its missing database.
        + ["--scheduler", "celery.beat:PersistentScheduler", "-s", str(tmp_path / "schedule")],
        clean_env(RUNWAY_DEBUG="0", RUNWAY_SECRET_KEY=OLD_FALLBACK_KEY),
        timeout=60,
    )

    assert done.returncode != 0
    assert "Runway's Celery beat refuses to start" in done.stderr
    assert "published demo or placeholder key" in done.stderr


@pytest.mark.parametrize(
    "key",
    ["changeme" * 8, "a" * 60, "abababababab" * 5, "your-secret-key-" + "q" * 40],
)
def test_weak_keys_have_a_problem(key):
    assert secret_key_problem(key) is not None


def test_a_random_key_has_none():
    assert secret_key_problem(secrets.token_urlsafe(50)) is None
