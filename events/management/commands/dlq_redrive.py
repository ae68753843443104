"""Move messages from a DLQ back to its source queue, selectively; dry run first."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.commands import INTERRUPTED_EXIT, interrupted, progress_bar
from events.consuming.dlq import (
    DlqError,
    RedriveReport,
    Selection,
    depth,
    redrive,
    resolve,
    start_native_move,
)

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
        report = RedriveReport()
        seen = 0

        def progress(n: int) -> None:
            nonlocal seen
            seen += n
            bar.update(n)

        try:
            with progress_bar(total=total, unit="msg", desc="redrive") as bar:
                redrive(
                    dlq,
                    source,
                    selection=selection,
                    max_messages=opts["max_messages"],
                    dry_run=opts["dry_run"],
                    progress=progress,
                    report=report,
                )
        except KeyboardInterrupt:
            raise self._interrupted(queue, dlq, source, report, seen, opts) from None
        left = (
            f"{report.left_selected} selected, {report.left_unselected} not selected, "
            f"{report.unexamined} not examined"
            + (f", {report.copied_not_deleted} copied but not deleted" if report.copied_not_deleted else "")
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
        if report.copied_not_deleted:
            self.stdout.write(
                f"{report.copied_not_deleted} of the messages left were copied to {source} but not deleted "
                f"from {dlq} ({'; '.join(report.delete_errors[:3])}): they are in both. A later redrive "
                "sends them again; consumers skip an event they have already handled."
            )
        if report.stopped:
            raise CommandError(
                f"Stopped after {report.seen} of {report.depth_before} message(s): {report.stopped}. "
                f"Nothing is lost (what it held is visible in {dlq} again); fix that, then run it again."
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

    def _interrupted(
        self, queue: str, dlq: str, source: str, report: RedriveReport, seen: int, opts: dict[str, Any]
    ) -> CommandError:
        resume = ["dlq_redrive", queue]
        for name in ("type", "aggregate_id", "older_than"):
            if opts[name]:
                resume += [f"--{name.replace('_', '-')}", opts[name]]
        if opts["max_messages"] is not None:
            if report.sent >= opts["max_messages"]:
                return CommandError(
                    f"Interrupted after sending the {report.sent} message(s) asked for (--max) from "
                    f"{dlq} to {source}: nothing left to resume.",
                    returncode=INTERRUPTED_EXIT,
                )
            resume += ["--max", str(opts["max_messages"] - report.sent)]
        if opts["dry_run"]:
            return interrupted(
                f"dry run: looked at {seen} of {report.depth_before} message(s) in {dlq}, "
                f"{report.matched} would move; nothing moved.",
                resume=[*resume, "--dry-run"],
                why_safe="A dry run moves nothing.",
            )
        return interrupted(
            f"moved {report.moved} message(s) from {dlq} to {source}"
            + (
                f" and copied {report.copied_not_deleted} more that {dlq} did not delete (in both)"
                if report.copied_not_deleted
                else ""
            )
            + f", looked at {seen} of {report.depth_before}. The others stay in {dlq} (those it held are "
            "released).",
            resume=resume,
            why_safe="It moves what is left. A message being copied at the moment of Ctrl-C may reach "
            f"{source} twice: harmless, consumers skip event ids they have already handled.",
        )
