"""Re-send events from the event store to their topics or to one consumer's queue."""

from __future__ import annotations

import sys
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from events import contracts
from events.replay import ReplayError, replay, select_events

from ._args import parse_when


class Command(BaseCommand):
    help = (
        "Replay stored events (same event ids, plus a 'replayed' attribute). --to-topic re-publishes "
        "to every subscriber; --to-queue NAME sends only to that consumer (backfilling a new one). "
        "Try --dry-run first."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sel = parser.add_argument_group("selection (combined with AND)")
        sel.add_argument("--id", action="append", default=[], dest="ids", help="Event id (repeatable).")
        sel.add_argument("--type", help="Event type, e.g. invoice.issued.")
        sel.add_argument("--aggregate-type", help="e.g. agreement, invoice, payment.")
        sel.add_argument("--aggregate-id", help="One aggregate's events.")
        sel.add_argument("--since", help="Occurred at or after (ISO date or datetime, UTC).")
        sel.add_argument("--until", help="Occurred before (ISO date or datetime, UTC).")
        sel.add_argument("--all", action="store_true", help="Select every stored event (no filter).")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--to-topic", action="store_true", help="Re-publish to the producers' topics.")
        target.add_argument("--to-queue", metavar="NAME", help="Send to one consumer's queue only.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Print the count and a sample; send nothing."
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        for value in opts["ids"]:
            try:
                uuid.UUID(value)
            except ValueError:
                raise CommandError(f"--id {value!r} is not an event id (a UUID)") from None
        if opts["type"] and opts["type"] not in contracts.REGISTRY:
            raise CommandError(
                f"--type {opts['type']!r} is not a known event type: {sorted(contracts.REGISTRY)}"
            )
        selectors = ("ids", "type", "aggregate_type", "aggregate_id", "since", "until")
        if not opts["all"] and not any(opts[k] for k in selectors):
            raise CommandError("Say which events: --id, --type, --aggregate-id, --since/--until, or --all.")
        since = parse_when(opts["since"], "--since") if opts["since"] else None
        until = parse_when(opts["until"], "--until") if opts["until"] else None
        if since and until and since >= until:
            raise CommandError("--since must be before --until")
        events = select_events(
            ids=opts["ids"],
            type=opts["type"],
            aggregate_type=opts["aggregate_type"],
            aggregate_id=opts["aggregate_id"],
            since=since,
            until=until,
        )
        bar: tqdm | None = None

        def progress(n: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, unit="event", file=sys.stderr, desc="replay")
            bar.update(n)

        total = events.count()
        try:
            report = replay(events, to_queue=opts["to_queue"], dry_run=opts["dry_run"], progress=progress)
        except ReplayError as exc:
            raise CommandError(str(exc)) from None
        finally:
            if bar is not None:
                bar.close()
        verb = "Would replay" if report.dry_run else "Replayed"
        self.stdout.write(f"{verb} {report.count} event(s) to {report.target}.")
        for row in report.sample:
            self.stdout.write(
                f"  {row.id}  {row.type:<28} {row.aggregate_type}:{row.aggregate_id} "
                f"v{row.aggregate_version}  {row.occurred_at:%Y-%m-%d %H:%M:%S}"
            )
        if report.count > len(report.sample):
            self.stdout.write(f"  ... and {report.count - len(report.sample)} more")
        if not report.dry_run:
            self.stdout.write(f"Sent {report.sent}, failed {report.failed}.")
            if report.failed:
                raise CommandError(f"{report.failed} event(s) were not sent: {'; '.join(report.errors)}")
