from __future__ import annotations

import sys
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from core.money import format_money
from invoicing.services import billing_today, chunk_ranges, flagged_agreements, invoices_run_inline


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
        with tqdm(total=total, unit="chunk", file=sys.stderr, desc="daily run", disable=total < 5) as bar:
            summary = invoices_run_inline(run_date=day, dry_run=self.dry_run, progress=bar.update)
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
