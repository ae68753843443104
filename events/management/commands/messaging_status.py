"""One screen: every queue and DLQ, the outbox backlog, every check; non-zero exit on a breach."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.operations.health import evaluate
from events.operations.observations import format_age


class Command(BaseCommand):
    help = (
        "Show every queue and DLQ (visible, in flight, delayed, oldest age), the outbox backlog and "
        "every automated check (the same ones monitoring alerts on) with what repairs a breach. "
        "Exits 2 when a check is breached, so cron or a monitor can call it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-age", action="store_true", help="Skip oldest-age lookups (faster).")

    def handle(self, *args: Any, no_age: bool = False, **options: Any) -> None:
        try:
            health = evaluate(with_age=not no_age)
        except (BotoCoreError, ClientError) as exc:
            raise CommandError(f"SQS is unreachable: {exc}", returncode=3) from None
        self.stdout.write(f"{'queue':<48} {'visible':>8} {'in flight':>9} {'delayed':>8} {'oldest':>7}")
        for q in health.queues:
            if q.missing:
                self.stdout.write(self.style.ERROR(f"{q.name:<48} MISSING: run messaging_provision"))
                continue
            line = (
                f"{q.name:<48} {q.visible:>8} {q.in_flight:>9} {q.delayed:>8} {format_age(q.oldest_age):>7}"
            )
            self.stdout.write(self.style.WARNING(line) if q.is_dlq and q.depth else line)
        outbox = health.outbox
        self.stdout.write(
            f"\noutbox: {outbox.unpublished_text} unpublished ({outbox.failing_text} failing), "
            f"oldest unpublished {format_age(outbox.oldest_unpublished_age)}"
        )
        if health.breached:
            for check in health.breached:
                self.stdout.write(self.style.ERROR(f"BREACH: {check.check}: {check.summary}"))
                for repair in check.repairs:
                    self.stdout.write(f"  repair: {repair.text}")
                    for line in repair.command_lines:
                        self.stdout.write(f"    {line}")
                    if repair.url:
                        self.stdout.write(f"    admin: {repair.url}")
            raise CommandError(f"{len(health.breached)} check(s) breached", returncode=2)
        self.stdout.write(self.style.SUCCESS(f"OK: all {len(health.checks)} checks pass"))
