"""Runway's settings: every value comes from the environment, parsed here and nowhere else.

Secrets may be given as ``NAME`` or as ``NAME_FILE`` (a file holding the value). The defaults let
``make demo`` run on a laptop; ``manage.py check --deploy`` names what production must set.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from dashboard.lib.env import database_from_url, env, envbool, envint, envlist

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = envbool("RUNWAY_DEBUG", False)
# With DEBUG off, a missing, short or published key stops every process at start-up (the checks
# in dashboard/checks.py, run by manage.py, gunicorn and Celery). Development falls back to a
# published key, with a warning; no key at all fails closed wherever Django would sign something.
RUNWAY_DEVELOPMENT_SECRET_KEY = "django-insecure-runway-development-key-refused-with-debug-off"
SECRET_KEY = env("RUNWAY_SECRET_KEY") or (RUNWAY_DEVELOPMENT_SECRET_KEY if DEBUG else "")
ALLOWED_HOSTS = envlist("RUNWAY_ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = envlist("RUNWAY_CSRF_TRUSTED_ORIGINS")

# HTTPS. Behind a TLS proxy (which must set X-Forwarded-Proto and append the client's address
# to X-Forwarded-For) every default below turns strict; each can be set on its own.
RUNWAY_BEHIND_TLS_PROXY = envbool("RUNWAY_BEHIND_TLS_PROXY", False)
# How many proxies append to X-Forwarded-For in front of Runway (log-in throttling counts the
# address the outermost one saw); only read behind a TLS proxy.
RUNWAY_PROXY_COUNT = envint("RUNWAY_PROXY_COUNT", 1)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if RUNWAY_BEHIND_TLS_PROXY else None
SECURE_SSL_REDIRECT = envbool("RUNWAY_SSL_REDIRECT", RUNWAY_BEHIND_TLS_PROXY)
SECURE_HSTS_SECONDS = envint("RUNWAY_HSTS_SECONDS", 31_536_000 if RUNWAY_BEHIND_TLS_PROXY else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("RUNWAY_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = envbool("RUNWAY_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = envbool(
    "RUNWAY_SECURE_COOKIES", RUNWAY_BEHIND_TLS_PROXY
)
SESSION_COOKIE_HTTPONLY = CSRF_COOKIE_HTTPONLY = True  # pages carry the CSRF token themselves
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django_htmx",
    "django_celery_beat",
    "axes",
    "dashboard.audit",
    "dashboard.jobs",
    "dashboard.notify",
    "dashboard.accounts",
    "dashboard.databases",
    "dashboard.schema",
    "dashboard.backups",
    "dashboard.triggers",
    "dashboard.overview",
    "runbooks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "dashboard.accounts.middleware.refuse_nul_characters",
    # Last: it turns a log-in refused by the throttle into the lockout page.
    "axes.middleware.AxesMiddleware",
]
# A refused form (an expired CSRF token) gets a page in the layout that says to reload.
CSRF_FAILURE_VIEW = "dashboard.accounts.refusals.csrf_failure"

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.accounts.context.roles",
                "runbooks.context.inbox_count",
            ],
        },
    },
]

DATABASES = {
    "default": database_from_url(env("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/runway"))
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# The throttle's backend comes first: it refuses a locked-out user name or address before any
# password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

# Log-in throttling (django-axes): after RUNWAY_LOGIN_FAILURE_LIMIT failures in a row, a user
# name is locked from every address, and an address for every user name, for
# RUNWAY_LOGIN_COOLOFF_MINUTES after the last failure. Refused attempts while locked do not extend
# the lock. A success clears that user name's failures from that address. Admins release a lock
# with manage.py axes_reset_username NAME / axes_reset_ip ADDRESS / axes_reset, or in the admin.
AXES_FAILURE_LIMIT = envint("RUNWAY_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=envint("RUNWAY_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_HANDLER = "dashboard.accounts.throttling.AuditedAxesHandler"
AXES_CLIENT_IP_CALLABLE = "dashboard.accounts.throttling.client_address"
AXES_LOCKOUT_CALLABLE = "dashboard.accounts.throttling.lockout_response"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("RUNWAY_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env("RUNWAY_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Celery: the broker is Redis; task state lives in Runway's own tables, never in Redis results.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Background jobs (dashboard/jobs): the queue they go to, and per kind how long a running job
# may go without a heartbeat before the reaper calls it interrupted (seconds; each kind has a
# default, e.g. RUNWAY_JOB_STALE_SECONDS="backup=900,rehearsal=1800").
RUNWAY_JOB_QUEUE = env("RUNWAY_JOB_QUEUE", "celery")
RUNWAY_JOB_STALE_SECONDS = {
    kind: int(seconds)
    for kind, _, seconds in (item.partition("=") for item in envlist("RUNWAY_JOB_STALE_SECONDS"))
}
CELERY_TIMEZONE = TIME_ZONE

# Managed databases
RUNWAY_CONNECT_TIMEOUT = envint("RUNWAY_CONNECT_TIMEOUT", 5)
RUNWAY_HEALTH_CHECK_MINUTES = envint("RUNWAY_HEALTH_CHECK_MINUTES", 5)
# Approvals a production deployment needs at each approval step (never from whoever started it).
RUNWAY_PRODUCTION_APPROVALS = envint("RUNWAY_PRODUCTION_APPROVALS", 1)
# A reminder goes out this many minutes before a run's phase is due (runbooks.schedule).
RUNWAY_REMINDER_MINUTES = envint("RUNWAY_REMINDER_MINUTES", 60)
# How long an approval holds per environment, in hours, until Deploy is pressed (0: no limit),
# e.g. RUNWAY_APPROVAL_MAX_AGE_HOURS="production=24,staging=72".
RUNWAY_APPROVAL_MAX_AGE_HOURS = {"production": 24, "staging": 0, "development": 0} | {
    name: int(hours)
    for name, _, hours in (item.partition("=") for item in envlist("RUNWAY_APPROVAL_MAX_AGE_HOURS"))
}
# Where managed databases' password references may point: env: names with this prefix, file:
# paths inside this folder (empty: no file: references). Runway's own secrets never resolve.
RUNWAY_SECRET_ENV_PREFIX = env("RUNWAY_SECRET_ENV_PREFIX", "RUNWAY_DB_")
RUNWAY_SECRETS_DIR = env("RUNWAY_SECRETS_DIR")
# Host names, *.suffixes, networks (CIDR) and socket folders managed databases may live on;
# empty: any host.
RUNWAY_ALLOWED_DB_HOSTS = envlist("RUNWAY_ALLOWED_DB_HOSTS")
# Authentication methods the scratch server may ask its password with (libpq's require_auth).
RUNWAY_SCRATCH_REQUIRE_AUTH = env("RUNWAY_SCRATCH_REQUIRE_AUTH", "scram-sha-256")
# Every migration and rehearsal runs with these (PostgreSQL units; 0 turns one off).
RUNWAY_MIGRATION_LOCK_TIMEOUT = env("RUNWAY_MIGRATION_LOCK_TIMEOUT", "3min")
RUNWAY_MIGRATION_STATEMENT_TIMEOUT = env("RUNWAY_MIGRATION_STATEMENT_TIMEOUT", "5min")
# Interpreters (absolute paths) a database may run its project's own env.py with: the programs
# the workers start for the "project" run mode. Empty: only Runway's own environment.
RUNWAY_PROJECT_PYTHONS = envlist("RUNWAY_PROJECT_PYTHONS")
RUNWAY_RUNBOOK_LIBRARY = env("RUNWAY_RUNBOOK_LIBRARY", str(BASE_DIR / "runbooks" / "library"))

# Backups: where they go, how they are sealed. The passphrase is required to take a backup; keep
# it (and a copy of it) outside Runway: it is all a restore with stock tools needs.
RUNWAY_BACKUP_STORAGE = env("RUNWAY_BACKUP_STORAGE", f"file://{BASE_DIR / '.runway' / 'backups'}")
RUNWAY_BACKUP_PASSPHRASE = env("RUNWAY_BACKUP_PASSPHRASE")
RUNWAY_BACKUP_FORMAT = env("RUNWAY_BACKUP_FORMAT", "custom")
RUNWAY_BACKUP_COMPRESSION = env("RUNWAY_BACKUP_COMPRESSION", "zstd")
RUNWAY_BACKUP_ZSTD_LEVEL = envint("RUNWAY_BACKUP_ZSTD_LEVEL", 1)
RUNWAY_S3_ENDPOINT_URL = env("RUNWAY_S3_ENDPOINT_URL") or None
RUNWAY_S3_REGION = env("RUNWAY_S3_REGION", "us-east-1")
RUNWAY_S3_ACCESS_KEY_ID = env("RUNWAY_S3_ACCESS_KEY_ID") or None
RUNWAY_S3_SECRET_ACCESS_KEY = env("RUNWAY_S3_SECRET_ACCESS_KEY") or None
# Validation restores into a scratch database: on this server (a maintenance DSN of a role with
# CREATEDB) when set, else on the source database's own server with the source's credentials.
RUNWAY_SCRATCH_DSN = env("RUNWAY_SCRATCH_DSN")
RUNWAY_SCRATCH_PASSWORD_REF = env("RUNWAY_SCRATCH_PASSWORD_REF")
# RUNWAY_BACKUP_STALE_SECONDS (older name) is mapped onto the backup and validation job kinds'
# timeout (300 s by default); RUNWAY_JOB_STALE_SECONDS naming a kind wins.
if env("RUNWAY_BACKUP_STALE_SECONDS"):
    for _kind in ("backup", "validation"):
        RUNWAY_JOB_STALE_SECONDS.setdefault(_kind, envint("RUNWAY_BACKUP_STALE_SECONDS", 300))
# Audit reports: a PDF lists at most this many events (CSV and JSON exports hold them all).
RUNWAY_PDF_MAX_EVENTS = envint("RUNWAY_PDF_MAX_EVENTS", 1000)

# Notifications (dashboard/notify). Links in them start with RUNWAY_PUBLIC_URL. Email goes through
# Django's SMTP backend and is off while RUNWAY_EMAIL_HOST is empty. Webhook URLs are secret
# references (env: names with RUNWAY_WEBHOOK_ENV_PREFIX, or file: paths in RUNWAY_SECRETS_DIR);
# loopback and private addresses are refused unless RUNWAY_WEBHOOK_ALLOW_PRIVATE (or DEBUG).
# Deliveries are jobs on RUNWAY_NOTIFY_QUEUE (empty: RUNWAY_JOB_QUEUE), retried after each of
# RUNWAY_NOTIFY_RETRY_DELAYS seconds (five attempts in all).
RUNWAY_PUBLIC_URL = env("RUNWAY_PUBLIC_URL", "http://127.0.0.1:8000")
RUNWAY_NOTIFY_QUEUE = env("RUNWAY_NOTIFY_QUEUE")
RUNWAY_NOTIFY_RETRY_DELAYS = [
    float(s) for s in envlist("RUNWAY_NOTIFY_RETRY_DELAYS", "10,60,300,900")
]
RUNWAY_WEBHOOK_TIMEOUT = envint("RUNWAY_WEBHOOK_TIMEOUT", 5)
RUNWAY_WEBHOOK_ENV_PREFIX = env("RUNWAY_WEBHOOK_ENV_PREFIX", "RUNWAY_WEBHOOK_")
RUNWAY_WEBHOOK_ALLOW_PRIVATE = envbool("RUNWAY_WEBHOOK_ALLOW_PRIVATE", False)
# Another mail backend (e.g. django.core.mail.backends.console.EmailBackend) turns email on too.
RUNWAY_EMAIL_BACKEND = env("RUNWAY_EMAIL_BACKEND")
EMAIL_BACKEND = RUNWAY_EMAIL_BACKEND or "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = env("RUNWAY_EMAIL_HOST")
EMAIL_PORT = envint("RUNWAY_EMAIL_PORT", 587)
EMAIL_HOST_USER = env("RUNWAY_EMAIL_USER")
EMAIL_HOST_PASSWORD = env("RUNWAY_EMAIL_PASSWORD")
# STARTTLS by default; RUNWAY_EMAIL_USE_SSL=1 for implicit TLS (port 465) turns STARTTLS off.
EMAIL_USE_SSL = envbool("RUNWAY_EMAIL_USE_SSL", False)
EMAIL_USE_TLS = envbool("RUNWAY_EMAIL_USE_TLS", not EMAIL_USE_SSL)
EMAIL_TIMEOUT = envint("RUNWAY_EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = SERVER_EMAIL = env("RUNWAY_EMAIL_FROM", "runway@localhost")

# Pre-migration gates: disk use of the data directory's file system (percent), and how long a
# transaction may have been open before the gates warn about it.
RUNWAY_DISK_FAIL_PERCENT = envint("RUNWAY_DISK_FAIL_PERCENT", 80)
RUNWAY_DISK_WARN_PERCENT = envint("RUNWAY_DISK_WARN_PERCENT", 70)
# A session holding a lock on a table the migration touches fails the lock gate when it is idle
# in its transaction, waits, or has been in its transaction this long; shorter is normal traffic.
RUNWAY_LOCK_HOLDER_SECONDS = envint("RUNWAY_LOCK_HOLDER_SECONDS", 5)
# A failing lock gate looks again after this long and fails only if a holder is still there.
RUNWAY_LOCK_RECHECK_SECONDS = envint("RUNWAY_LOCK_RECHECK_SECONDS", 2)
RUNWAY_LONG_TRANSACTION_SECONDS = envint("RUNWAY_LONG_TRANSACTION_SECONDS", 300)

CELERY_BEAT_SCHEDULE = {
    "check-all-connections": {
        "task": "dashboard.databases.tasks.check_all_connections",
        "schedule": RUNWAY_HEALTH_CHECK_MINUTES * 60.0,
    },
    "check-backup-policies": {
        "task": "dashboard.backups.tasks.check_backup_policies",
        "schedule": 300.0,
    },
    "prune-backups": {
        "task": "dashboard.backups.tasks.prune_backups",
        "schedule": 24 * 3600.0,
    },
    "reap-jobs": {
        "task": "dashboard.jobs.tasks.reap_jobs",
        "schedule": 60.0,
    },
    "watch-triggers": {
        "task": "dashboard.triggers.tasks.watch_triggers",
        "schedule": float(envint("RUNWAY_TRIGGER_SECONDS", 2)),
    },
    # Due phases remind, passed deployment windows expire their approvals (runbooks.schedule).
    "run-schedules": {
        "task": "runbooks.tasks.run_schedules",
        "schedule": 60.0,
    },
}
# Rollback triggers watch a deployment through this many hours after its execution.
RUNWAY_TRIGGER_WINDOW_HOURS = envint("RUNWAY_TRIGGER_WINDOW_HOURS", 24)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("RUNWAY_LOG_LEVEL", "INFO")},
    # axes: its start-up banner and successful log-ins are noise; failures stay (WARNING).
    "loggers": {"alembic": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}
