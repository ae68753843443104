"""Creating many agreements at once: the import's path (the admin keeps ``agreement_create``).

``agreements_create_many`` applies exactly the single path's checks to each input
(``agreement_validate``; the database's CHECK constraints stay the last word), then writes a
whole batch in one transaction with a handful of statements, however many rows it holds:

1. COPY the rows into a temporary table (core.bulk's escaping: any text is stored as typed);
2. ``INSERT ... SELECT ... ON CONFLICT (external_ref) DO NOTHING RETURNING``: an
   external_ref already present (an earlier import, the admin, a concurrent import) is left
   as it is, and the rows returned are exactly the ones created;
3. one ``agreement.created`` event per created row, recorded through the outbox in the same
   transaction (its COPY path), so a batch and its events commit together.

It does so in two steps: ``prepare`` (checks, new ids, COPY lines, the events checked against
their contract: all Python, no database) and ``write_prepared`` (the transaction). The import
prepares a batch in its reading thread (or, opted in, in processes of its own: import_batch.py)
while a writer thread waits on the database with the batch before.

If the batch fails as a whole (the database refused one row), ``write_batch`` goes row by row,
the same way, to name the row. ``ImportBatch`` (import_batch.py) is the import's writer.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from core.bulk import copy_line, copy_lines
from events import contracts
from events.publishing import NewEvent, record_events
from events.publishing.outbox import PreparedEvents, prepare_events

from .models import Agreement
from .services import AgreementInput, agreement_validate, event_data, new_agreement_values

# Every column of a new agreement, in the order the COPY writes them.
_FIELDS = tuple(Agreement._meta.concrete_fields)
_COLUMNS = tuple(f.column for f in _FIELDS)
_ATTNAMES = tuple(f.attname for f in _FIELDS)
_STAGE = "agreements_import_stage"


def _row(values: dict[str, Any]) -> list[object]:
    # The values as they are: every column here is text, a number, a date, a timestamp, a UUID or
    # NULL (a column the new agreement leaves unset), which COPY's text format takes as written.
    return [values.get(name) for name in _ATTNAMES]


@dataclass(frozen=True)
class Prepared:
    """A batch of new agreements ready to write: checked, with their ids, their rows as COPY
    lines and their ``agreement.created`` events (by external_ref) made and checked."""

    lines: list[str]
    events: dict[str, NewEvent]  # in the order of ``lines``
    outbox: PreparedEvents | None  # None: the events are checked when recorded

    def only(self, refs: Collection[str]) -> Prepared:
        """The same batch without the rows whose external_ref is not in ``refs``."""
        return Prepared(
            lines=[line for line, ref in zip(self.lines, self.events, strict=True) if ref in refs],
            events={ref: e for ref, e in self.events.items() if ref in refs},
            outbox=self.outbox,  # rows of events not recorded are not written
        )


def prepare(inputs: Sequence[AgreementInput], *, events_too: bool = True) -> Prepared:
    """Check ``inputs`` and make everything their writing needs (no database; any thread):
    with ``events_too``, their events' outbox rows as well (for a batch whose rows are
    expected to be new: the work is lost on a row found present).

    Raises ValidationError if an input is invalid. ``inputs`` must not repeat an external_ref."""
    for data in inputs:
        agreement_validate(data)
    now = timezone.now()
    stamps = {"created_at": now, "updated_at": now}
    agreements = {d.external_ref: new_agreement_values(d) | stamps for d in inputs}
    if len(agreements) != len(inputs):
        raise ValueError("inputs repeat an external_ref; give each one once")
    texts: dict[Any, str] = {}
    events = {
        ref: NewEvent(contracts.AGREEMENT_CREATED, str(a["id"]), 1, event_data(SimpleNamespace(**a)))
        for ref, a in agreements.items()
    }
    return Prepared(
        lines=[copy_line(_row(a), texts) for a in agreements.values()],
        events=events,
        outbox=prepare_events(list(events.values())) if events_too else None,
    )


@transaction.atomic
def write_prepared(batch: Prepared) -> set[str]:
    """Create the agreements of ``batch`` whose external_ref is new, with their events; return
    those refs. One transaction; a DatabaseError if the database refuses the batch."""
    table = Agreement._meta.db_table
    cols = ", ".join(f'"{c}"' for c in _COLUMNS)
    with connection.cursor() as cur:
        # One stage per session, emptied at each commit (and here, for a second batch in one
        # transaction); LIKE copies no constraints, so a refusal comes from the real table.
        cur.execute(f'CREATE TEMPORARY TABLE IF NOT EXISTS "{_STAGE}" (LIKE "{table}") ON COMMIT DELETE ROWS')
        cur.execute(f'TRUNCATE "{_STAGE}"')
        copy_lines(_STAGE, _COLUMNS, batch.lines)
        cur.execute(
            # in external_ref order: concurrent imports of overlapping files take the unique
            # index's row locks in one order, so one waits for the other instead of deadlocking
            f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM "{_STAGE}" ORDER BY "external_ref" '
            'ON CONFLICT ("external_ref") DO NOTHING RETURNING "external_ref"'
        )
        created = {ref for (ref,) in cur.fetchall()}
    record_events(
        sender=Agreement,
        events=[e for ref, e in batch.events.items() if ref in created],
        prepared=batch.outbox,
    )
    return created


def agreements_create_many(inputs: Sequence[AgreementInput]) -> set[str]:
    """Create the agreements of ``inputs`` whose external_ref is new; return those refs.

    One transaction. Raises ValidationError (nothing written) if an input is invalid, and a
    DatabaseError if the database refuses the batch. ``inputs`` must not repeat an external_ref.
    """
    return write_prepared(prepare(inputs))


@dataclass
class Written:
    """What writing one batch came to."""

    created: int = 0
    present: int = 0
    rejected: list[tuple[int, ValidationError | DatabaseError]] = field(default_factory=list)


def write_batch(rows: Sequence[tuple[int, AgreementInput]], prepared: Prepared | None = None) -> Written:
    """Write ``(line, input)`` rows in one transaction (``prepared``: what ``prepare`` made of
    them, if it did); if the database refuses the batch, row by row, so each refused row is
    named by its line and the others are still written."""
    try:
        created = write_prepared(prepared) if prepared else agreements_create_many([d for _, d in rows])
    except (ValidationError, DatabaseError):
        return _one_by_one(rows)
    return Written(created=len(created), present=len(rows) - len(created))


def _one_by_one(rows: Sequence[tuple[int, AgreementInput]]) -> Written:
    # Each row alone, the same way (ON CONFLICT): a row another writer committed meanwhile is
    # present, not refused; only a row the database refuses on its own is named.
    out = Written()
    for line, data in rows:
        try:
            created = agreements_create_many([data])
        except (ValidationError, DatabaseError) as exc:
            out.rejected.append((line, exc))
        else:
            out.created += len(created)
            out.present += 1 - len(created)
    return out
