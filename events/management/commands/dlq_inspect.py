"""Look into a dead-letter queue without consuming its messages."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.consuming.dlq import DlqError, depth, inspect, resolve
from events.operations.observations import format_age


class Command(BaseCommand):
    help = (
        "Show a DLQ: how many messages, the oldest age, and a table (event type, aggregate, receive count, "
        "first error seen). Messages are only looked at: they stay in the DLQ."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "queue", help="Consumer name (invoicing, payments, ...) or a full queue/DLQ name."
        )
        parser.add_argument("--limit", type=int, default=50, help="Messages to show (default 50).")

    def handle(self, *args: Any, queue: str, limit: int, **options: Any) -> None:
        if limit < 1:
            raise CommandError("--limit must be at least 1")
        try:
            dlq, source = resolve(queue)
        except DlqError as exc:
            raise CommandError(str(exc)) from None
        messages = inspect(dlq, limit=limit)
        total = depth(dlq)
        oldest = max((m.age_seconds for m in messages), default=None)
        self.stdout.write(f"DLQ {dlq} (source {source}): {total} message(s), oldest {format_age(oldest)}")
        if not messages:
            return
        self.stdout.write(
            f"{'message id':<38} {'event type':<28} {'aggregate':<30} {'recv':>4} {'age':>6}  first error"
        )
        for m in messages:
            self.stdout.write(
                f"{m.message_id:<38} {m.event_type[:28]:<28} {m.aggregate[:30]:<30} {m.receive_count:>4} "
                f"{format_age(m.age_seconds):>6}  {m.error[:100]}"
            )
        if total > len(messages):
            self.stdout.write(f"... {total - len(messages)} more (use --limit)")
