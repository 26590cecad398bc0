from pathlib import Path

from django.core.management.base import BaseCommand, CommandParser

from dashboard.databases import demo
from dashboard.lib.cluster import SUPERUSER


class Command(BaseCommand):
    help = "Create the demo users and the two demo target databases (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--user", default="app_owner", help="owner role of the targets")
        parser.add_argument("--password-file", type=Path, required=True)
        parser.add_argument("--superuser-password-file", type=Path, required=True)
        parser.add_argument("--users", type=int, default=2000, help="seeded users per target")

    def handle(self, *args: object, **opts: object) -> None:
        host, port, user = str(opts["host"]), int(opts["port"]), str(opts["user"])  # type: ignore[call-overload]
        password_file = Path(opts["password_file"]).resolve()  # type: ignore[arg-type]
        password = password_file.read_text().strip()
        su_password = Path(opts["superuser_password_file"]).read_text().strip()  # type: ignore[arg-type]
        admin_dsn = (
            f"host={host} port={port} dbname=postgres user={SUPERUSER} password={su_password}"
        )
        for target in demo.TARGETS:
            made = demo.prepare_target(
                target,
                host=host,
                port=port,
                user=user,
                password=password,
                admin_dsn=admin_dsn,
                users=int(opts["users"]),  # type: ignore[call-overload]
            )
            demo.register_target(
                target, host=host, port=port, user=user, password_file=password_file
            )
            state = f"created at {target.revision} and seeded" if made else "already there"
            self.stdout.write(f"  {target.name} ({target.environment}): {state}")
        created = demo.create_users()
        if created:
            self.stdout.write("  Demo users (these passwords are shown once):")
            for username, pw in created.items():
                self.stdout.write(f"    {username:<9} {pw}")
        else:
            self.stdout.write(
                "  Demo users lead, engineer, viewer exist already (their passwords were shown "
                "on the first run; reset one with `manage.py changepassword lead`)."
            )
        demo.request_checks()
