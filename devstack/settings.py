"""The product's settings plus this app, so that ``setup_demo`` and ``seed_target`` exist.

Only ``python -m devstack <command>`` uses them. A deployed Runway runs ``dashboard.settings``,
where neither command exists: one creates users and registers databases on a local cluster, the
other (``--replace``) empties a managed database's tables and fills them with made-up rows.
"""

from dashboard.settings import *  # noqa: F403
from dashboard.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "devstack"]
