"""Processed-event records: which events a consumer has applied, written in the handler's transaction.

One statement for any number of events: ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` inserts
the new ones and says which they are; an event whose record exists (committed by an earlier
delivery, or by another thread that committed while this insert waited for it) is not returned.
No savepoint is needed, so a batch's transaction stays one flat transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db import connection
from django.utils import timezone

from ..models import ProcessedEvent


@dataclass(frozen=True)
class Record:
    event_id: uuid.UUID
    event_type: str
    payload_hash: str


def record_processed(consumer: str, records: Sequence[Record], *, timeout_ms: int = 0) -> set[uuid.UUID]:
    """Insert the records that do not exist yet; the event ids actually inserted.

    ``records`` must not repeat an event id (a repeat would simply not be returned). With
    ``timeout_ms``, first bound every statement of the transaction, this insert included, by that
    statement and lock timeout (``SET LOCAL``), in the same round trip."""
    if not records:
        return set()
    table = ProcessedEvent._meta.db_table
    # PostgreSQL 13+ times each statement of a multi-statement query on its own, with the
    # settings as the statements before it left them; the insert's rows are the query's result.
    bound = "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true); "
    with connection.cursor() as cur:
        cur.execute(
            (bound if timeout_ms > 0 else "")
            + f"INSERT INTO {table} (consumer, event_id, event_type, payload_hash, processed_at) "  # noqa: S608 - our table name
            "SELECT %s, e.id, e.type, e.hash, %s "
            "FROM unnest(%s::uuid[], %s::varchar[], %s::varchar[]) AS e(id, type, hash) "
            "ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
            [
                *([str(timeout_ms), str(timeout_ms)] if timeout_ms > 0 else []),
                consumer,
                timezone.now(),
                [r.event_id for r in records],
                [r.event_type for r in records],
                [r.payload_hash for r in records],
            ],
        )
        return {row[0] if isinstance(row[0], uuid.UUID) else uuid.UUID(str(row[0])) for row in cur.fetchall()}


def processed_hashes(consumer: str, event_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The payload hash recorded for each of these events that ``consumer`` has processed."""
    ids = list(event_ids)
    if not ids:
        return {}
    return dict(
        ProcessedEvent.objects.filter(consumer=consumer, event_id__in=ids).values_list(
            "event_id", "payload_hash"
        )
    )
