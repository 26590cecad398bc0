import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
application = get_wsgi_application()

# Gunicorn runs no system checks: refuse to serve with an insecure configuration.
from dashboard.checks import refuse_to_start_insecure  # noqa: E402

refuse_to_start_insecure("web server")
