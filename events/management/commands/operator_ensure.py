"""Create the operator (superuser) account on first run with a random password."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from core.commands import command_line


class Command(BaseCommand):
    help = "Create an operator superuser if missing, with a random password printed once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="operator")
        parser.add_argument("--email", default="operator@localhost")

    def handle(self, *args: Any, username: str, email: str, **options: Any) -> None:
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            self.stdout.write(
                f"Operator account {username!r} exists. Forgot the password? "
                + command_line("changepassword", username)
            )
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email=email, password=password)
        self.stdout.write(
            self.style.SUCCESS(f"Created operator account {username!r} with password: {password}")
        )
        self.stdout.write("It is shown only now; change it with: " + command_line("changepassword", username))
