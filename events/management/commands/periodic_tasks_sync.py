from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from core.schedules import periodic_tasks_sync


class Command(BaseCommand):
    help = (
        "Create the project's celery-beat periodic tasks if missing (runs after migrate too). "
        "Operators' edits in admin are kept unless --reset."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset", action="store_true", help="Overwrite schedules edited in admin with the defaults."
        )

    def handle(self, *args: Any, reset: bool = False, **options: Any) -> None:
        for action, name in periodic_tasks_sync(reset=reset):
            self.stdout.write(f"{action:<8} {name}")
