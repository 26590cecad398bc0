from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from runbooks.actions import REGISTRY
from runbooks.library import folder
from runbooks.loader import RunbookError, load_file


class Command(BaseCommand):
    help = "Load runbook YAML files (default: the whole library) and report the first problem."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("files", nargs="*", help="YAML files (default: the library)")

    def handle(self, *args: Any, files: list[str], **options: Any) -> None:
        paths = [Path(f) for f in files] or sorted(folder().glob("*.yaml"))
        if not paths:
            raise CommandError(f"No runbook files in {folder()}.")
        seen: dict[str, str] = {}
        for path in paths:
            try:
                book = load_file(path, REGISTRY.keys())
            except RunbookError as exc:
                raise CommandError(str(exc)) from None
            if book.id in seen:
                raise CommandError(
                    f"{path.name}: duplicate runbook id {book.id!r} (also in {seen[book.id]})"
                )
            seen[book.id] = path.name
            steps = sum(len(p.steps) for p in book.phases)
            self.stdout.write(
                f"ok  {path.name}: {book.title} ({len(book.phases)} phases, {steps} steps)"
            )
