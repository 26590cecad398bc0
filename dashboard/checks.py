"""Production refuses to run insecure.

These checks carry no deploy tag, so they run on every start that runs checks (``manage.py``
commands, ``runserver``, ``migrate``). Gunicorn and Celery run none by themselves: ``wsgi.py`` and
the Celery app's start-up signals call ``refuse_to_start_insecure()``, which stops the process
with the checks' messages when one is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

MIN_SECRET_KEY_LENGTH = 50
# Keys that are published (in this repository, in Django's project template, in tutorials): with
# one, anyone can forge a session cookie and log in as anybody.
KNOWN_SECRET_KEYS = frozenset(
    {
        "insecure-demo-key-set-RUNWAY_SECRET_KEY-in-production",  # Runway's old fallback
    }
)
KNOWN_KEY_PREFIXES = ("django-insecure-",)  # startproject's keys, and Runway's development key
PLACEHOLDER_WORDS = ("insecure", "changeme", "change-me", "change_me", "your-secret-key")

HOW_TO_MAKE_ONE = (
    "Set RUNWAY_SECRET_KEY (or RUNWAY_SECRET_KEY_FILE) to a random value of 50 or more "
    "characters, e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'."
)


def secret_key_problem(key: str) -> str | None:
    """What is wrong with ``key`` as a production secret key, or None."""
    if not key:
        return "RUNWAY_SECRET_KEY is not set."
    lowered = key.lower()
    if (
        key in KNOWN_SECRET_KEYS
        or key.startswith(KNOWN_KEY_PREFIXES)
        or any(word in lowered for word in PLACEHOLDER_WORDS)
    ):
        return "RUNWAY_SECRET_KEY is a published demo or placeholder key."
    if len(key) < MIN_SECRET_KEY_LENGTH:
        return (
            f"RUNWAY_SECRET_KEY is {len(key)} characters long; it needs at least "
            f"{MIN_SECRET_KEY_LENGTH}."
        )
    if len(set(key)) < 5:
        return "RUNWAY_SECRET_KEY has fewer than 5 different characters."
    return None


@checks.register(checks.Tags.security)
def check_secret_key(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[Any]:
    try:
        key = settings.SECRET_KEY
    except ImproperlyConfigured:  # Django refuses to hand out an empty key
        key = ""
    problem = secret_key_problem(key)
    if problem is None:
        return []
    if settings.DEBUG:
        if key == settings.RUNWAY_DEVELOPMENT_SECRET_KEY:
            problem = "RUNWAY_SECRET_KEY is not set."
        return [
            checks.Warning(
                f"{problem} Fine for development (RUNWAY_DEBUG=1); with DEBUG off Runway "
                "refuses to start.",
                hint=HOW_TO_MAKE_ONE,
                id="runway.W001",
            )
        ]
    return [checks.Error(problem, hint=HOW_TO_MAKE_ONE, id="runway.E001")]


class InsecureConfiguration(ImproperlyConfigured):
    pass


def refuse_to_start_insecure(process: str) -> None:
    """Raise InsecureConfiguration, naming every failing security check, in a process that runs
    no system checks of its own (gunicorn, Celery)."""
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    errors = [m for m in checks.run_checks(tags=[checks.Tags.security]) if m.is_serious()]
    if errors:
        raise InsecureConfiguration(
            f"Runway's {process} refuses to start:\n" + "\n".join(map(str, errors))
        )
