"""Prove that every consumer has every event it subscribes to; with --repair, re-send what it lost."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.audit import AuditError, AuditReport, audited_consumers, delivery_audit_run
from events.audit.subscriptions import consumer_names
from events.publishing.relay_pass import relay_once

from ._args import parse_when

COLUMNS = ("published", "handled", "dead_lettered", "in_flight", "missing")
HEADS = ("published", "handled", "dead-lettered", "in flight", "missing")


class Command(BaseCommand):
    help = (
        "Delivery audit: per consumer and event type, the events published for its subscriptions "
        "and how many it handled, dead-lettered, has in flight (younger than "
        "DELIVERY_AUDIT_GRACE_SECONDS, or just re-sent) and is missing. Reads from each consumer's "
        "watermark on (--full: the whole event store; --since: events that occurred since). "
        "--repair re-sends the missing events to that consumer's queue only (signed, at most "
        "DELIVERY_AUDIT_MAX_RESEND per run); --dry-run changes nothing. Exits 2 if anything is missing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--consumer", action="append", default=[], help="Only this consumer (repeatable)."
        )
        rng = parser.add_mutually_exclusive_group()
        rng.add_argument("--since", help="Events that occurred at or after (ISO date or datetime, UTC).")
        rng.add_argument("--full", action="store_true", help="The whole event store, not from the watermark.")
        parser.add_argument(
            "--repair", action="store_true", help="Re-send missing events to the consumer's queue."
        )
        parser.add_argument(
            "--max", type=int, help="Re-send at most this many per consumer (default: the setting)."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Report (and what --repair would re-send); change nothing."
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        known = consumer_names()
        for name in opts["consumer"]:
            if name not in known:
                raise CommandError(f"--consumer {name!r} is not a consumer; consumers: {', '.join(known)}")
        if opts["max"] is not None and opts["max"] < 0:
            raise CommandError("--max must be 0 or more")
        since = parse_when(opts["since"], "--since") if opts["since"] else None
        consumers = opts["consumer"] or audited_consumers()
        missing = 0
        alerts = False
        for consumer in consumers:
            try:
                report = delivery_audit_run(
                    consumer=consumer,
                    full=opts["full"],
                    since=since,
                    repair=opts["repair"],
                    dry_run=opts["dry_run"],
                    max_resend=opts["max"],
                )
            except AuditError as exc:
                raise CommandError(str(exc)) from None
            self._print(report)
            missing += report.totals.missing
            alerts = alerts or bool(report.alert)
        if alerts:
            relay_once(alerts_only=True)  # the operators hear of it now, ahead of any backlog
        if missing:
            hint = "" if opts["repair"] else " (run again with --repair to re-send them)"
            raise CommandError(f"{missing} event(s) missing{hint}", returncode=2)

    def _print(self, r: AuditReport) -> None:
        w = self.stdout.write
        if r.skipped:
            w(self.style.WARNING(f"{r.consumer}: skipped: {r.skipped}"))
            return
        scope = (
            f"occurred since {r.since:%Y-%m-%d %H:%M}"
            if r.since
            else "the whole event store"
            if r.audited_from is None
            else f"published since {r.audited_from:%Y-%m-%d %H:%M:%S} (its watermark)"
        )
        w(self.style.MIGRATE_HEADING(f"{r.consumer}: {scope}; {'; '.join(r.sources)}"))
        w(f"  {'event type':<28}" + "".join(f"{h:>14}" for h in HEADS))
        rows = [*r.counts.items(), ("total", r.totals)]
        for event_type, c in rows:
            line = f"  {event_type:<28}" + "".join(
                f"{c.in_flight + c.resent if col == 'in_flight' else getattr(c, col):>14,}" for col in COLUMNS
            )
            w(self.style.ERROR(line) if c.missing else line)
        if r.not_audited:
            w(f"  not audited (delivered, no handler: acknowledged unread): {', '.join(r.not_audited)}")
        totals = r.totals
        if totals.resent:
            w(f"  in flight includes {totals.resent:,} re-sent by an earlier pass, not handled yet")
        if totals.missing:
            if r.finding.oldest_missing:
                w(f"  oldest missing occurred {r.finding.oldest_missing:%Y-%m-%d %H:%M:%S} UTC")
            if r.dry_run:
                verb = "would re-send" if r.repair else "--repair would re-send"
                w(f"  {verb} {len(r.finding.to_resend):,} to {r.consumer}'s queue")
            elif r.repair:
                w(f"  re-sent {r.resent:,} to {r.consumer}'s queue ({r.resend_failed:,} failed)")
                for error in r.resend_errors:
                    w(self.style.ERROR(f"    {error}"))
        if not r.dry_run:
            before = "never" if r.watermark_before is None else f"{r.watermark_before:%Y-%m-%d %H:%M:%S}"
            after = "none" if r.watermark_after is None else f"{r.watermark_after:%Y-%m-%d %H:%M:%S}"
            w(f"  watermark {before} -> {after}; {r.seconds:.2f} s" + (f"; {r.alert}" if r.alert else ""))
        else:
            w(f"  dry run: nothing changed; {r.seconds:.2f} s")
