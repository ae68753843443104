from __future__ import annotations

from datetime import date
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.commands import interrupted, progress_bar
from core.money import format_money
from invoicing.services import (
    RunSummary,
    billing_today,
    chunk_ranges,
    flagged_agreements,
    invoices_run_inline,
)


class RunCommand(BaseCommand):
    dry_run = True

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--date", help="Run date (YYYY-MM-DD); default today in BILLING_TIME_ZONE.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            day = date.fromisoformat(options["date"]) if options["date"] else billing_today()
        except ValueError:
            raise CommandError(f"--date {options['date']!r} is not a date like 2026-11-27") from None
        total = sum(1 for _ in chunk_ranges(day))
        summary = RunSummary(run_date=day)
        try:
            with progress_bar(total=total, unit="chunk", desc="daily run") as bar:
                invoices_run_inline(run_date=day, dry_run=self.dry_run, progress=bar.update, summary=summary)
        except KeyboardInterrupt:
            raise self._interrupted(summary, total) from None
        verb = "Would issue" if self.dry_run else "Issued"
        self.stdout.write(f"{verb} {summary.issued} invoice(s) for {day.isoformat()}.")
        for currency, amount in sorted(summary.totals.items()):
            self.stdout.write(f"  {currency}: {format_money(amount, currency)}")
        self.stdout.write(f"Agreements flagged for an operator: {summary.flagged}")
        for row in flagged_agreements()[:20]:
            self.stdout.write(f"  {row} [{row.agreement_id}]: {row.flagged_reason or row.correction_flag}")
        if summary.failed_chunks:
            for error in summary.errors[:10]:
                self.stderr.write(f"  {error}")
            raise CommandError(
                f"{summary.failed_chunks} chunk(s) failed (above); the others were issued. Fix the cause and "
                f"run this command again: it is idempotent."
            )

    def _interrupted(self, summary: RunSummary, total: int) -> CommandError:
        day = summary.run_date.isoformat()
        resume = [self.command_name, "--date", day]
        chunks = f"{summary.chunks} of {total} chunk(s) of agreements for {day}"
        if self.dry_run:
            return interrupted(
                f"looked at {chunks}: {summary.issued} invoice(s) would be issued so far; "
                "nothing was issued.",
                resume=resume,
                why_safe="A preview changes nothing.",
            )
        minutes = settings.CELERY_VISIBILITY_TIMEOUT // 60
        return interrupted(
            f"issued {summary.issued} invoice(s) in {chunks} (each chunk is all or nothing).",
            resume=resume,
            why_safe="The daily run is idempotent: periods already invoiced are skipped. Left alone, "
            f"the watchdog hands this run's remaining chunks to the workers after {minutes} minutes "
            "(when beat and a worker run).",
        )

    @property
    def command_name(self) -> str:
        return self.__module__.rsplit(".", 1)[-1]
