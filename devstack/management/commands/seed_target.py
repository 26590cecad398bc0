import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.audit.chain import record
from dashboard.databases import credentials
from dashboard.databases.models import ManagedDatabase
from dashboard.lib import pg
from dashboard.lib.secrets import SecretError
from devstack.seeding import seed as fill


class Command(BaseCommand):
    help = "Fill a managed database (at migrations_target 0016 or later) with realistic data."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("database", help="the managed database's name")
        parser.add_argument("--users", type=int, required=True, help="how many users to make")
        parser.add_argument("--seed", type=int, default=42, help="random seed (deterministic)")
        parser.add_argument(
            "--replace", action="store_true", help="empty the application tables first"
        )

    def handle(
        self, *args: object, database: str, users: int, seed: int, replace: bool, **opts: object
    ) -> None:
        db = ManagedDatabase.objects.filter(name=database).first()
        if db is None:
            raise CommandError(f"No managed database named {database!r}.")
        if users <= 0:
            raise CommandError("--users must be a positive number.")
        try:
            password = credentials.password(db)
            conn = pg.connect(db.dsn, password, autocommit=False)
        except (SecretError, pg.BadDsn) as exc:
            raise CommandError(f"{db.name}: {exc}") from None
        except pg.OperationalError as exc:
            problem = pg.classify(exc)
            raise CommandError(f"{db.name}: {pg.PROBLEM_MESSAGES[problem]}.") from None
        started = time.monotonic()
        with conn:
            try:
                counts = fill(conn, users=users, seed=seed, replace=replace)
            except ValueError as exc:
                raise CommandError(f"{db.name}: {exc}") from None
            conn.commit()
        elapsed = time.monotonic() - started
        record(None, "database.seeded", db, details={"rows": counts, "seconds": round(elapsed, 1)})
        for table, count in counts.items():
            self.stdout.write(f"  {table:<18} {count:>12,}")
        self.stdout.write(self.style.SUCCESS(f"Seeded {db.name} in {elapsed:.1f} s."))
