"""Bulk-load agreements from an upstream export (CSV with a header row, or JSON lines)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from tqdm import tqdm

from agreements.bulk import ImportBatch
from agreements.importing import FIELDS, RowError, SeenRefs, check_file, read_rows, row_to_input
from agreements.services import AgreementInput
from core.commands import few_collections, interrupted, note, progress_bar
from events.publishing.kicker import kicker

DEFAULT_BATCH_SIZE = 2000


class Command(BaseCommand):
    help = (
        "Import agreements from FILE (.csv with a header row, or .jsonl; UTF-8), one per row, fields: "
        + ", ".join(FIELDS)
        + ". Idempotent by external_ref; bad rows are reported with their line "
        "number while the good ones load. Rows are written in batches, one transaction each."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help="rows per transaction (default 2000); a batch the database refuses is retried row by row",
        )

    def handle(self, *args: Any, file: Path, batch_size: int, **options: Any) -> None:
        if not 1 <= batch_size <= 50_000:
            raise CommandError(f"--batch-size must be from 1 to 50000 (got {batch_size})")
        lines = check_file(file)  # before anything is imported: a file we cannot read at all
        skipped = rejected = last_line = 0
        seen = SeenRefs()
        batch = ImportBatch(size=batch_size)
        try:
            with few_collections(), progress_bar(total=lines, unit="line", desc="import") as bar:
                try:
                    for last_line, row in read_rows(file):
                        bar.update(last_line - bar.n)
                        try:
                            data = self._parse(last_line, row, seen)
                        except RowError as exc:
                            rejected += 1
                            note(bar, f"line {last_line}: {exc}", self.stderr)
                            continue
                        if data is None:
                            skipped += 1
                        elif batch.add(last_line, data):
                            batch.flush()
                            rejected += self._report_refused(batch, bar)
                except UnicodeDecodeError:
                    raise CommandError(
                        f"{file}: is no longer UTF-8 (was it changed during the import?)"
                    ) from None
                finally:
                    batch.close()  # the rows read so far are written, whatever stopped the reading
                    # what is committed is published soon, even if this process ends right away
                    kicker.flush()
                rejected += self._report_refused(batch, bar)
        except KeyboardInterrupt:
            rejected += self._report_refused(batch, None)
            raise interrupted(
                f"stopped at line {last_line} of {lines} of {file}: imported {batch.written.created}, "
                f"already present {skipped + batch.written.present}, rejected {rejected}.",
                resume=["agreements_import", str(file), *self._batch_size_args(batch_size)],
                why_safe="The import is idempotent by external_ref: rows already imported are counted as "
                "already present, and the others are imported.",
            ) from None
        skipped += batch.written.present
        self.stdout.write(
            f"Imported {batch.written.created}, already present {skipped}, rejected {rejected}."
        )
        if rejected:
            raise CommandError(f"{rejected} row(s) rejected (listed above); the others were imported.")

    @staticmethod
    def _batch_size_args(batch_size: int) -> list[str]:
        return [] if batch_size == DEFAULT_BATCH_SIZE else ["--batch-size", str(batch_size)]

    def _parse(self, line: int, row: dict[str, Any] | RowError, seen: SeenRefs) -> AgreementInput | None:
        """The row's input, or None for a repeat of an earlier line; raise RowError on a bad row."""
        if isinstance(row, RowError):
            raise row
        data = row_to_input(row)
        earlier = seen.add(line, data)
        if earlier is not None:
            earlier_line, same = earlier
            if same:
                return None  # the same row twice: skipped, as a re-import would be
            raise RowError(
                f"external_ref {data.external_ref!r} already on line {earlier_line} with different data"
            )
        return data

    def _report_refused(self, batch: ImportBatch, bar: tqdm | None) -> int:
        """Report the rows the database refused so far (once each) and return their count.
        Errors are written as they come (a bad file does not pile them up in memory)."""
        refused = batch.take_rejected()
        for line, exc in refused:
            note(bar, f"line {line}: {_reason(exc)}", self.stderr)
        return len(refused)


def _reason(exc: ValidationError | DatabaseError) -> str:
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    if isinstance(exc, ValidationError):
        return "; ".join(exc.messages)
    return str(exc)
