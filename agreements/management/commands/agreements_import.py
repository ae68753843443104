"""Bulk-load agreements from an upstream export (CSV with a header row, or JSON lines)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from agreements.importing import FIELDS, RowError, SeenRefs, check_file, read_rows, row_to_input
from agreements.models import Agreement
from agreements.services import agreement_create


class Command(BaseCommand):
    help = (
        "Import agreements from FILE (.csv with a header row, or .jsonl; UTF-8), one per row, fields: "
        + ", ".join(FIELDS)
        + ". Idempotent by external_ref; bad rows are reported with their line "
        "number while the good ones load."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args: Any, file: Path, **options: Any) -> None:
        lines = check_file(file)  # before anything is imported: a file we cannot read at all
        created = skipped = rejected = 0
        seen = SeenRefs()
        # Progress on a terminal only (disable=None: off when stderr is not a tty).
        with tqdm(total=lines, unit="line", desc="import", file=sys.stderr, disable=None) as bar:
            try:
                for line, row in read_rows(file):
                    bar.update(line - bar.n)
                    try:
                        if self._import(line, row, seen):
                            created += 1
                        else:
                            skipped += 1
                    except (RowError, ValidationError) as exc:
                        rejected += 1
                        self._report(bar, f"line {line}: {_reason(exc)}")
            except UnicodeDecodeError:
                raise CommandError(
                    f"{file}: is no longer UTF-8 (was it changed during the import?)"
                ) from None
        self.stdout.write(f"Imported {created}, already present {skipped}, rejected {rejected}.")
        if rejected:
            raise CommandError(f"{rejected} row(s) rejected (listed above); the others were imported.")

    def _import(self, line: int, row: dict[str, Any] | RowError, seen: SeenRefs) -> bool:
        """Create the row's agreement (True), or skip a known one (False); raise on a bad row."""
        if isinstance(row, RowError):
            raise row
        data = row_to_input(row)
        earlier = seen.add(line, data)
        if earlier is not None:
            earlier_line, same = earlier
            if same:
                return False  # the same row twice: skipped, as a re-import would be
            raise RowError(
                f"external_ref {data.external_ref!r} already on line {earlier_line} with different data"
            )
        if Agreement.objects.filter(external_ref=data.external_ref).exists():
            return False
        agreement_create(data=data)
        return True

    def _report(self, bar: tqdm, message: str) -> None:
        # Errors are written as they come (a bad file does not pile them up in memory); on a
        # terminal through tqdm, which clears the bar first and redraws it below.
        if bar.disable:
            self.stderr.write(message)
        else:
            tqdm.write(message, file=sys.stderr)


def _reason(exc: RowError | ValidationError) -> str:
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    if isinstance(exc, ValidationError):
        return "; ".join(exc.messages)
    return str(exc)
