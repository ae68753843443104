"""One screen: every queue and DLQ, the outbox backlog; non-zero exit when a threshold is breached."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.monitoring import breaches, format_age, outbox_stats, queue_stats


class Command(BaseCommand):
    help = (
        "Show every queue and DLQ (visible, in flight, delayed, oldest age) and the outbox backlog. "
        "Exits 2 when a MONITOR_* threshold is breached, so cron or a monitor can call it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-age", action="store_true", help="Skip oldest-age lookups (faster).")

    def handle(self, *args: Any, no_age: bool = False, **options: Any) -> None:
        try:
            queues = queue_stats(with_age=not no_age)
        except (BotoCoreError, ClientError) as exc:
            raise CommandError(f"SQS is unreachable: {exc}", returncode=3) from None
        outbox = outbox_stats()
        self.stdout.write(f"{'queue':<48} {'visible':>8} {'in flight':>9} {'delayed':>8} {'oldest':>7}")
        for q in queues:
            if q.missing:
                self.stdout.write(self.style.ERROR(f"{q.name:<48} MISSING: run messaging_provision"))
                continue
            line = (
                f"{q.name:<48} {q.visible:>8} {q.in_flight:>9} {q.delayed:>8} {format_age(q.oldest_age):>7}"
            )
            self.stdout.write(self.style.WARNING(line) if q.is_dlq and q.depth else line)
        self.stdout.write(
            f"\noutbox: {outbox.unpublished} unpublished ({outbox.failing} failing), "
            f"oldest unpublished {format_age(outbox.oldest_unpublished_age)}"
        )
        found = breaches(queues, outbox)
        if found:
            for b in found:
                self.stdout.write(self.style.ERROR(f"BREACH: {b}"))
            raise CommandError(f"{len(found)} threshold(s) breached", returncode=2)
        self.stdout.write(self.style.SUCCESS("OK: no threshold breached"))
