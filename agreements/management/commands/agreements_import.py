"""Bulk-load agreements from an upstream export (CSV with a header row, or JSON lines)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from tqdm import tqdm

from agreements.import_batch import ImportBatch
from agreements.importing import FIELDS, RowError, check_file, read_rows
from core.commands import few_collections, interrupted, note, progress_bar
from events.publishing.kicker import kicker

DEFAULT_BATCH_SIZE = 2000
MAX_PREPARERS = 16


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
        parser.add_argument(
            "--preparers",
            type=int,
            default=None,
            help="processes that parse, check and prepare batches while this one reads and writes "
            "(default AGREEMENTS_IMPORT_PREPARERS, 0: none); for a host with idle cores",
        )

    def handle(self, *args: Any, file: Path, batch_size: int, preparers: int | None, **options: Any) -> None:
        if not 1 <= batch_size <= 50_000:
            raise CommandError(f"--batch-size must be from 1 to 50000 (got {batch_size})")
        if preparers is not None and not 0 <= preparers <= MAX_PREPARERS:
            raise CommandError(f"--preparers must be from 0 to {MAX_PREPARERS} (got {preparers})")
        lines = check_file(file)  # before anything is imported: a file we cannot read at all
        last_line = 0
        batch = ImportBatch(size=batch_size, preparers=preparers)
        try:
            with few_collections(), progress_bar(total=lines, unit="line", desc="import") as bar:
                try:
                    for last_line, row in read_rows(file):
                        bar.update(last_line - bar.n)
                        if batch.add(last_line, row):
                            batch.flush()
                            self._report_refused(batch, bar)
                except UnicodeDecodeError:
                    raise CommandError(
                        f"{file}: is no longer UTF-8 (was it changed during the import?)"
                    ) from None
                finally:
                    batch.close()  # the lines read so far are written, whatever stopped the reading
                    # what is committed is published soon, even if this process ends right away
                    kicker.flush()
                self._report_refused(batch, bar)
        except KeyboardInterrupt:
            with contextlib.suppress(KeyboardInterrupt):  # pressed again: the counts still come
                self._report_refused(batch, None)
            raise interrupted(
                f"stopped at line {last_line} of {lines} of {file}: imported {batch.written.created}, "
                f"already present {batch.repeated + batch.written.present}, rejected {batch.rejected}.",
                resume=["agreements_import", str(file), *self._options_args(batch_size, preparers)],
                why_safe="The import is idempotent by external_ref: rows already imported are counted as "
                "already present, and the others are imported.",
            ) from None
        created, present = batch.written.created, batch.repeated + batch.written.present
        self.stdout.write(f"Imported {created}, already present {present}, rejected {batch.rejected}.")
        if batch.rejected:
            raise CommandError(f"{batch.rejected} row(s) rejected (listed above); the others were imported.")

    @staticmethod
    def _options_args(batch_size: int, preparers: int | None) -> list[str]:
        """The options given that the resume needs (the operator's batch size and preparers)."""
        args = [] if batch_size == DEFAULT_BATCH_SIZE else ["--batch-size", str(batch_size)]
        return args if preparers is None else [*args, "--preparers", str(preparers)]

    def _report_refused(self, batch: ImportBatch, bar: tqdm | None) -> None:
        """Print the lines refused so far, once each, in line order (a batch's refusals by its
        reading and checking come when it is judged, the database's when it is written; a bad file
        does not pile them up in memory). Those a Ctrl-C kept from being printed go back, for the
        report on the way out; ``batch.rejected`` counts them all."""
        refused = batch.take_rejected()
        for n, (line, exc) in enumerate(refused):
            try:
                note(bar, f"line {line}: {_reason(exc)}", self.stderr)
            except KeyboardInterrupt:
                batch.put_back(refused[n:])
                raise


def _reason(exc: RowError | ValidationError | DatabaseError) -> str:
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    if isinstance(exc, ValidationError):
        return "; ".join(exc.messages)
    return str(exc)
