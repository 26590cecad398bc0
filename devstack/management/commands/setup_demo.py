from pathlib import Path

from django.core.management.base import BaseCommand, CommandParser

from devstack import demo
from devstack.cluster import Cluster


class Command(BaseCommand):
    help = (
        "Create the demo users and the demo target databases, the sandbox's scripts and the "
        "trigger rules (idempotent)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--user", default="app_owner", help="owner role of the targets")
        parser.add_argument("--password-file", type=Path, required=True)
        parser.add_argument("--superuser-password-file", type=Path, required=True)
        parser.add_argument("--users", type=int, default=2000, help="seeded users per target")
        parser.add_argument(
            "--load-port", type=int, default=8090, help="the demo application's /health port"
        )
        parser.add_argument(
            "--sandbox-scripts",
            type=Path,
            help="folder for the sandbox's Alembic scripts (default: sandbox-scripts beside the "
            "cluster's folder)",
        )

    def handle(
        self,
        *args: object,
        host: str,
        port: int,
        user: str,
        password_file: Path,
        superuser_password_file: Path,
        users: int,
        load_port: int,
        sandbox_scripts: Path | None,
        **opts: object,
    ) -> None:
        password_file = password_file.resolve()
        sandbox = (
            sandbox_scripts or superuser_password_file.parent.parent / "sandbox-scripts"
        ).resolve()
        changed = demo.sandbox_scripts(sandbox)
        password = password_file.read_text().strip()
        # The launcher's cluster, reached as its superuser (the password file is in its root).
        cluster = Cluster(
            root=superuser_password_file.parent,
            port=port,
            password=superuser_password_file.read_text().strip(),
            host=host,
        )
        for target in demo.TARGETS:
            scripts = sandbox if target.name == demo.SANDBOX else None
            made = demo.prepare_target(
                target, cluster=cluster, user=user, password=password, users=users, scripts=scripts
            )
            db = demo.register_target(
                target,
                host=host,
                port=port,
                user=user,
                password_file=password_file,
                scripts=scripts,
            )
            state = f"created at {target.revision} and seeded" if made else "already there"
            self.stdout.write(f"  {target.name} ({target.environment}): {state}")
            if scripts is not None:
                written = "written" if changed else "already there"
                self.stdout.write(
                    f"    its scripts in {scripts}: {written} ({demo.SANDBOX_REVISION} pending: "
                    "a cleanup that deletes the inactive users)"
                )
            rules = demo.configure_triggers(db, load_port)
            if target.name == demo.LOAD_TARGET:
                said = f"set: {', '.join(rules)}" if rules else "already there"
                self.stdout.write(
                    f"    rollback triggers on the demo application's health and log-ins: {said}"
                )
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
