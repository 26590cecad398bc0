from pathlib import Path

from django.core.management.base import BaseCommand, CommandParser

from devstack import demo
from devstack.cluster import Cluster


class Command(BaseCommand):
    help = "Create the demo users and the two demo target databases (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--user", default="app_owner", help="owner role of the targets")
        parser.add_argument("--password-file", type=Path, required=True)
        parser.add_argument("--superuser-password-file", type=Path, required=True)
        parser.add_argument("--users", type=int, default=2000, help="seeded users per target")

    def handle(
        self,
        *args: object,
        host: str,
        port: int,
        user: str,
        password_file: Path,
        superuser_password_file: Path,
        users: int,
        **opts: object,
    ) -> None:
        password_file = password_file.resolve()
        password = password_file.read_text().strip()
        # The launcher's cluster, reached as its superuser (the password file is in its root).
        cluster = Cluster(
            root=superuser_password_file.parent,
            port=port,
            password=superuser_password_file.read_text().strip(),
            host=host,
        )
        for target in demo.TARGETS:
            made = demo.prepare_target(
                target, cluster=cluster, user=user, password=password, users=users
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
