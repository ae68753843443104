"""Move messages from a DLQ back to its source queue, selectively; dry run first."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from events.consuming.dlq import DlqError, Selection, depth, redrive, resolve, start_native_move

from ._args import parse_duration


class Command(BaseCommand):
    help = (
        "Send DLQ messages back to their source queue (copy, then delete: never lost). "
        "Select with --type, --aggregate-id, --older-than, or take all. Try --dry-run first."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "queue", help="Consumer name (invoicing, payments, ...) or a full queue/DLQ name."
        )
        parser.add_argument("--type", help="Only messages of this event type.")
        parser.add_argument("--aggregate-id", help="Only this aggregate's messages.")
        parser.add_argument("--older-than", help="Only messages older than this (30s, 15m, 2h, 7d).")
        parser.add_argument("--max", type=int, dest="max_messages", help="Move at most N messages.")
        parser.add_argument("--dry-run", action="store_true", help="Count what would move; move nothing.")
        parser.add_argument(
            "--native",
            action="store_true",
            help="Real AWS only, with no selection: let SQS move everything (StartMessageMoveTask).",
        )

    def handle(self, *args: Any, queue: str, **opts: Any) -> None:
        try:
            dlq, source = resolve(queue)
        except DlqError as exc:
            raise CommandError(str(exc)) from None
        if opts["max_messages"] is not None and opts["max_messages"] < 1:
            raise CommandError("--max must be at least 1")
        selection = Selection(
            event_type=opts["type"],
            aggregate_id=opts["aggregate_id"],
            older_than=parse_duration(opts["older_than"], "--older-than") if opts["older_than"] else None,
        )
        if opts["native"]:
            if (
                opts["type"]
                or opts["aggregate_id"]
                or opts["older_than"]
                or opts["max_messages"]
                or opts["dry_run"]
            ):
                raise CommandError(
                    "--native moves everything: it cannot be combined with a selection or --dry-run"
                )
            try:
                handle = start_native_move(dlq, source)
            except DlqError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"Started SQS move task {handle}: {dlq} -> {source}")
            return
        total = depth(dlq)
        bar = tqdm(total=total, unit="msg", file=sys.stderr, desc="redrive", disable=total < 50)
        try:
            report = redrive(
                dlq,
                source,
                selection=selection,
                max_messages=opts["max_messages"],
                dry_run=opts["dry_run"],
                progress=bar.update,
            )
        finally:
            bar.close()
        left = (
            f"{report.left_selected} selected, {report.left_unselected} not selected, "
            f"{report.unexamined} not examined"
        )
        if opts["dry_run"]:
            self.stdout.write(
                f"Dry run: would move {report.matched} of {report.depth_before} message(s) from {dlq} to "
                f"{source}; examined {report.seen}. Nothing moved; in {dlq}: {left}."
            )
            return
        self.stdout.write(
            f"Moved {report.moved} message(s) from {dlq} to {source}; examined {report.seen} of "
            f"{report.depth_before}. Left in {dlq}: {report.depth_after} ({left})."
        )
        if report.unexamined:
            self.stdout.write(
                "Not examined: in flight elsewhere during the run, arrived after it started, or beyond "
                "--max. Run it again to look at them."
            )
        if report.failed:
            raise CommandError(
                f"{report.failed} message(s) could not be sent back: {'; '.join(report.errors[:5])}"
            )
