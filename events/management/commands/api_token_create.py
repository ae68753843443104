"""Create a bearer token for the read-only events API (shown once)."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for a service reading GET /api/events/. The token is printed once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Who will use it, e.g. 'reporting-service'.")

    def handle(self, *args: Any, name: str, **options: Any) -> None:
        if ApiToken.objects.filter(name=name).exists():
            raise CommandError(f"A token named {name!r} exists; pick another name or delete it in admin.")
        key = secrets.token_urlsafe(32)
        ApiToken.objects.create(name=name, key_hash=ApiToken.hash_key(key))
        self.stdout.write(key)
