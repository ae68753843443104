"""Reading an upstream export of agreements (CSV with a header row, or JSON lines), streamed.

``check_file`` refuses, before anything is imported, a file that cannot be read as a whole.
``read_rows`` then yields its rows one at a time with their line numbers, and ``row_to_input``
is the one way a raw row becomes an ``AgreementInput``: it parses, then applies the service's
own checks, so a line is refused with the same words admin would show.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any, TextIO

from django.core.management.base import CommandError

from core.fields import shown

from . import services
from .services import AgreementInput, CheckedInput, agreement_errors

# The documented columns; customer_ref (optional, defaults to external_ref) is accepted too.
FIELDS = tuple(f for f in services.FIELDS if f != "customer_ref")
REQUIRED = (
    "external_ref",
    "customer_name",
    "customer_email",
    "amount_minor",
    "currency",
    "interval",
    "start_date",
)
SUFFIXES = (".csv", ".jsonl", ".ndjson")
# No agreement needs a line this long; a longer one means the wrong file (or a hostile one),
# and refusing it up front keeps a single line from being read into memory whole.
MAX_LINE_BYTES = 1 << 20
# Report order: the columns as documented, customer_ref (optional, undocumented in FIELDS) last.
_ORDER = (*FIELDS, "customer_ref")


class RowError(ValueError):
    """A line that cannot become an agreement; the message names each bad field and why."""


def check_file(path: Path) -> int:
    """Return the number of lines in ``path``, or raise CommandError if it cannot be imported
    at all: missing, a directory, an unknown extension, empty, a line that is not UTF-8 or
    absurdly long. Reads the file once, in binary, holding one line at a time."""
    if not path.exists():
        raise CommandError(f"{path}: no such file")
    if path.is_dir():
        raise CommandError(f"{path}: is a directory; give a .csv or .jsonl file")
    if path.suffix.lower() not in SUFFIXES:
        raise CommandError(f"{path}: use a .csv (with header row) or .jsonl file")
    if not path.is_file():
        raise CommandError(f"{path}: is not a regular file; give a .csv or .jsonl file")
    lines, has_content = 0, False
    try:
        with path.open("rb") as fh:
            while raw := fh.readline(MAX_LINE_BYTES + 1):
                lines += 1
                if len(raw) > MAX_LINE_BYTES:
                    raise CommandError(f"{path}: line {lines} is longer than {MAX_LINE_BYTES} bytes")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise CommandError(
                        f"{path}: line {lines}, byte {exc.start + 1} (0x{raw[exc.start]:02X}) is not UTF-8. "
                        "Save the file as UTF-8 (Excel: CSV UTF-8) and import it again; "
                        "nothing was imported."
                    ) from None
                has_content = has_content or bool(text.strip(" \t\r\n\ufeff"))
    except OSError as exc:
        raise CommandError(f"{path}: cannot read it: {exc.strerror}") from None
    if not has_content:
        raise CommandError(f"{path}: file is empty")
    return lines


class _Counted:
    """The lines of ``fh``, counting them: csv's own line_num lags after a csv.Error."""

    def __init__(self, fh: TextIO) -> None:
        self.fh, self.n = fh, 0

    def __iter__(self) -> Iterator[str]:
        for line in self.fh:
            self.n += 1
            yield line


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """Yield ``(line number, row)`` for each row of a file ``check_file`` accepted, streaming.

    A row that cannot even be read (broken CSV quoting, not a JSON object) comes as a RowError in
    place of the row, so the caller reports it and goes on. A byte-order mark (Excel's "CSV
    UTF-8") is skipped. Raises CommandError if a CSV file lacks a required column."""
    # utf-8-sig drops a leading BOM, which would otherwise glue itself to the first column's name.
    with path.open(encoding="utf-8-sig", newline="") as fh:
        if path.suffix.lower() == ".csv":
            yield from _csv_rows(path, fh)
        else:
            yield from _json_rows(fh)


def _csv_rows(path: Path, fh: TextIO) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    lines = _Counted(fh)
    reader = csv.DictReader(lines)
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise CommandError(f"{path}: line {lines.n}: the header row is not CSV: {exc}") from None
    missing = [f for f in REQUIRED if f not in header]
    if missing:
        raise CommandError(f"{path}: the header row lacks {missing}; expected columns {list(FIELDS)}")
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield lines.n, RowError(f"not CSV: {exc}")
            continue
        yield lines.n, row


def _json_rows(fh: TextIO) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    for n, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except RecursionError:
            yield n, RowError("not JSON: nested too deeply")
            continue
        except ValueError as exc:
            yield n, RowError(f"not JSON: {exc}")
            continue
        yield n, obj if isinstance(obj, dict) else RowError("each line must be a JSON object")


class _Bad(Exception):
    """One field's value could not be parsed."""


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a numeric reference in JSON, e.g. "external_ref": 1001
    raise _Bad(f"must be a string, not {type(value).__name__}")


def _whole(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = value.strip() if isinstance(value, str) else ""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise _Bad(f"{shown(value)} is not a whole number")
    if len(text) > 30:  # far beyond any bound, and clear of int()'s limit on digits
        raise _Bad(f"{shown(value)} is far too large")
    return int(text)


def _day(value: object) -> date:
    text = value.strip() if isinstance(value, str) else ""
    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise _Bad(f"{shown(value)} is not an ISO date (YYYY-MM-DD)") from None


_PARSERS = {
    "external_ref": lambda v: _text(v).strip(),
    "customer_ref": lambda v: _text(v).strip(),
    "customer_name": lambda v: _text(v).strip(),
    "customer_email": lambda v: _text(v).strip(),
    "description": _text,
    "amount_minor": _whole,
    "currency": lambda v: _text(v).strip().upper(),  # as admin does: "eur" is EUR
    "interval": lambda v: _text(v).strip().lower(),
    "interval_count": lambda v: 1 if _blank(v) else _whole(v),
    "start_date": _day,
    "end_date": lambda v: None if _blank(v) else _day(v),
}


def row_to_input(row: Mapping[str, Any]) -> AgreementInput:
    """Turn one raw row (CSV strings or JSON values) into valid input, or raise RowError.

    Never raises anything else, whatever the row holds. The input it returns passes
    ``agreement_validate``; the RowError it raises lists every bad field of the row."""
    missing = [f for f in REQUIRED if _blank(row.get(f))]
    if missing:
        raise RowError(f"missing {', '.join(missing)}")
    values: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    for name, parse in _PARSERS.items():
        try:
            values[name] = parse(row.get(name))
        except _Bad as exc:
            problems[name] = [str(exc)]
    problems = agreement_errors(values) | problems
    if problems:
        raise RowError("; ".join(f"{f}: {' '.join(problems[f])}" for f in _ORDER if f in problems))
    return services.vouch(CheckedInput(**values))


class SeenRefs:
    """The external_refs of the good rows read so far: on which line, and a hash of their data.

    A hash, not the row, so a million rows cost about 130 MB rather than the rows themselves;
    line and hash are packed into one int for the same reason."""

    def __init__(self) -> None:
        self._refs: dict[str, int] = {}

    def add(self, line: int, data: AgreementInput) -> tuple[int, bool] | None:
        """Remember ``data`` from ``line``; if its external_ref came before, return that line
        and whether its data was the same (then nothing is remembered)."""
        digest = hash(data) & 0xFFFF_FFFF_FFFF_FFFF
        earlier = self._refs.get(data.external_ref)
        if earlier is not None:
            return earlier >> 64, (earlier & 0xFFFF_FFFF_FFFF_FFFF) == digest
        self._refs[data.external_ref] = line << 64 | digest
        return None
