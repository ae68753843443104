"""Re-send events from the event store to their topics or to one consumer's queue."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q, QuerySet

from core.commands import interrupted, progress_bar
from events import contracts
from events.models import OutboxEvent
from events.publishing.replay import ReplayError, ReplayReport, replay, select_events

from ._args import parse_when

# Events per replay() call: Ctrl-C resumes at the first event of the page in progress.
PAGE_SIZE = 500


class Command(BaseCommand):
    help = (
        "Replay stored events (same event ids, plus a 'replayed' attribute). --to-topic re-publishes "
        "to every subscriber; --to-queue NAME sends only to that consumer (backfilling a new one). "
        "Try --dry-run first. Ctrl-C prints the command that resumes where it stopped."
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
        total = events.count()
        if opts["dry_run"] or total == 0:
            report = self._replay(events, opts, progress=None)
        else:
            report = self._replay_resumably(events, total, opts)
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

    def _replay(
        self, events: QuerySet[OutboxEvent], opts: dict[str, Any], progress: Callable[[int], None] | None
    ) -> ReplayReport:
        try:
            return replay(events, to_queue=opts["to_queue"], dry_run=opts["dry_run"], progress=progress)
        except ReplayError as exc:
            raise CommandError(str(exc)) from None

    def _replay_resumably(
        self, events: QuerySet[OutboxEvent], total: int, opts: dict[str, Any]
    ) -> ReplayReport:
        """Replay page by page (oldest first), so that Ctrl-C can say where to resume: at the first
        event of the page in progress, every earlier page having been sent in full."""
        done = 0

        def progress(n: int) -> None:
            nonlocal done
            done += n
            bar.update(n)

        report: ReplayReport | None = None
        resume_at: datetime | None = None
        failed_at: datetime | None = None  # the first page with an event not sent
        try:
            with progress_bar(total=total, unit="event", desc="replay") as bar:
                for first_at, page in pages(events, PAGE_SIZE):
                    resume_at = first_at
                    part = self._replay(page, opts, progress)
                    if part.failed and failed_at is None:
                        failed_at = first_at
                    if report is None:
                        report = part
                    else:
                        report.sent += part.sent
                        report.failed += part.failed
                        report.errors.extend(part.errors[: max(0, 5 - len(report.errors))])
        except KeyboardInterrupt:
            failed = report.failed if report else 0
            if failed:  # resumed from the page in progress, they would never be sent
                done_text = (
                    f"replayed {done} of {total} event(s); {failed} failed ({'; '.join(report.errors[:3])})."
                )
                start = "It starts at the first batch in which an event failed"
            else:
                done_text = f"replayed {done} of {total} event(s)."
                start = "It starts at the first event of the batch that was in progress"
            raise interrupted(
                done_text,
                resume=resume_args(opts, failed_at or resume_at),
                why_safe=f"{start}, so events already sent may be sent twice: harmless, consumers "
                "skip event ids they have already handled.",
            ) from None
        assert report is not None  # total > 0: at least one page
        report.count = total
        return report


def pages(events: QuerySet[OutboxEvent], size: int) -> Iterator[tuple[datetime, QuerySet[OutboxEvent]]]:
    """``events`` (ordered by occurred_at, id) in pages of ``size``: (first occurred_at, page)."""
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        rest = events
        if after is not None:
            rest = rest.filter(Q(occurred_at__gt=after[0]) | Q(occurred_at=after[0], id__gt=after[1]))
        keys = list(rest.values_list("occurred_at", "id")[:size])
        if not keys:
            return
        yield keys[0][0], events.filter(id__in=[k[1] for k in keys])
        after = keys[-1]


def resume_args(opts: dict[str, Any], since: datetime | None) -> list[str]:
    """The arguments that replay the same selection from ``since`` on (--since replaced)."""
    args = ["events_replay"]
    for event_id in opts["ids"]:
        args += ["--id", event_id]
    for name in ("type", "aggregate_type", "aggregate_id", "until"):
        if opts[name]:
            args += [f"--{name.replace('_', '-')}", opts[name]]
    if since is not None:
        args += ["--since", since.isoformat()]
    elif opts["since"]:
        args += ["--since", opts["since"]]
    if opts["all"]:
        args.append("--all")
    args += ["--to-queue", opts["to_queue"]] if opts["to_queue"] else ["--to-topic"]
    return args
