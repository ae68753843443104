"""Bulk-load agreements from an upstream export (CSV with a header row, or JSON lines)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from agreements.models import Agreement
from agreements.services import AgreementInput, agreement_create

FIELDS = (
    "external_ref",
    "customer_name",
    "customer_email",
    "description",
    "amount_minor",
    "currency",
    "interval",
    "interval_count",
    "start_date",
    "end_date",
)
REQUIRED = (
    "external_ref",
    "customer_name",
    "customer_email",
    "amount_minor",
    "currency",
    "interval",
    "start_date",
)


class RowError(ValueError):
    pass


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    suffix = path.suffix.lower()
    with path.open(encoding="utf-8", newline="") as fh:
        if suffix == ".csv":
            reader = csv.DictReader(fh)
            missing = [f for f in REQUIRED if f not in (reader.fieldnames or [])]
            if missing:
                raise CommandError(f"{path}: the header row lacks {missing}; expected columns {list(FIELDS)}")
            for row in reader:
                yield reader.line_num, row
        elif suffix in (".jsonl", ".ndjson"):
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    yield n, {"__error__": f"not JSON: {exc}"}
                    continue
                yield n, obj if isinstance(obj, dict) else {"__error__": "each line must be a JSON object"}
        else:
            raise CommandError(f"{path}: use a .csv (with header row) or .jsonl file")


def _to_input(row: dict[str, Any]) -> AgreementInput:
    if "__error__" in row:
        raise RowError(row["__error__"])
    missing = [f for f in REQUIRED if row.get(f) in (None, "")]
    if missing:
        raise RowError(f"missing {', '.join(missing)}")

    def whole(name: str, default: int | None = None) -> int:
        value = row.get(name)
        if value in (None, "") and default is not None:
            return default
        try:
            if isinstance(value, float) or (
                isinstance(value, str) and not value.strip().lstrip("-").isdigit()
            ):
                raise ValueError
            return int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise RowError(f"{name}: {value!r} is not a whole number") from None

    def day(name: str) -> date | None:
        value = row.get(name)
        if value in (None, ""):
            return None
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise RowError(f"{name}: {value!r} is not an ISO date (YYYY-MM-DD)") from None

    start = day("start_date")
    assert start is not None
    return AgreementInput(
        external_ref=str(row["external_ref"]).strip(),
        customer_ref=str(row.get("customer_ref") or "").strip(),
        customer_name=str(row["customer_name"]).strip(),
        customer_email=str(row["customer_email"]).strip(),
        description=str(row.get("description") or ""),
        amount_minor=whole("amount_minor"),
        currency=str(row["currency"]).strip().upper(),
        interval=str(row["interval"]).strip().lower(),
        interval_count=whole("interval_count", default=1),
        start_date=start,
        end_date=day("end_date"),
    )


class Command(BaseCommand):
    help = (
        "Import agreements from FILE (.csv with a header row, or .jsonl), one per row, fields: "
        + ", ".join(FIELDS)
        + ". Idempotent by external_ref; bad rows are reported with their line "
        "number while the good ones load."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args: Any, file: Path, **options: Any) -> None:
        if not file.exists():
            raise CommandError(f"{file}: no such file")
        created = skipped = 0
        errors: list[str] = []
        rows = list(_rows(file))
        for line, row in tqdm(rows, unit="row", file=sys.stderr, desc="import", disable=len(rows) < 100):
            try:
                data = _to_input(row)
                if Agreement.objects.filter(external_ref=data.external_ref).exists():
                    skipped += 1
                    continue
                agreement_create(data=data)
                created += 1
            except RowError as exc:
                errors.append(f"line {line}: {exc}")
            except ValidationError as exc:
                detail = (
                    "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
                    if hasattr(exc, "error_dict")
                    else "; ".join(exc.messages)
                )
                errors.append(f"line {line}: {detail}")
        for e in errors:
            self.stderr.write(e)
        self.stdout.write(f"Imported {created}, already present {skipped}, rejected {len(errors)}.")
        if errors:
            raise CommandError(f"{len(errors)} row(s) rejected (listed above); the others were imported.")
