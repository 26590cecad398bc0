"""``python -m devstack demo`` starts the demo stack; ``python -m devstack load ...`` the demo's
application alone (:mod:`devstack.load`); ``python -m devstack COMMAND ...`` runs a management
command with ``devstack.settings`` (``setup_demo``, ``seed_target``, or any of the
product's)."""

import os
import sys


def main(argv: list[str]) -> None:
    if argv[:1] == ["demo"]:
        from devstack.launcher import main as demo

        demo(argv)
        return
    if argv[:1] == ["load"]:
        from devstack.load import main as load

        sys.exit(load(argv[1:]))
    # Not setdefault: a shell or a test run may have the product's settings in its environment.
    os.environ["DJANGO_SETTINGS_MODULE"] = "devstack.settings"
    from django.core.management import execute_from_command_line

    execute_from_command_line(["python -m devstack", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
