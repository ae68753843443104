"""The in-process source: the producer's event store is in this database.

Set-based: one statement (one snapshot) counts the published events per type and classifies the
ones the consumer has not handled, found with an anti-join of the event store against its
processed-event rows (the query an operator would write by hand, and about as fast); a second
one, only when something is missing, fetches the oldest missing ids up to the pass's budget. The
process holds a few rows whatever the size of the store. An incremental pass reads only rows
published since the watermark, through the index ``outbox_published``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from ..models import OutboxEvent
from .accounting import HANDLED, MISSING, NOT_HANDLED, RESEND_JOIN, Finding, unhandled_state_sql

PUBLISHED = "published"


class LocalSource:
    """Events of producers that share this database."""

    def __init__(self, producer: str) -> None:
        self.producer = producer

    def describe(self) -> str:
        return f"{self.producer}: this database"

    def audit(
        self,
        *,
        consumer: str,
        types: Sequence[str],
        horizon: datetime,
        published_from: datetime | None,
        since: datetime | None,
        budget: int,
    ) -> Finding:
        params: dict[str, Any] = {
            "consumer": consumer,
            "horizon": horizon,
            "types": list(types),
            "published_from": published_from,
            "since": since,
        }
        where = "e.published_at IS NOT NULL AND e.type = ANY(%(types)s)"
        if published_from is not None:
            where += " AND e.published_at >= %(published_from)s"
        if since is not None:
            where += " AND e.occurred_at >= %(since)s"
        table = OutboxEvent._meta.db_table
        state = unhandled_state_sql("e.published_at >= %(horizon)s")
        unhandled = f"FROM {table} e {RESEND_JOIN} WHERE {where} AND {NOT_HANDLED}"
        finding = Finding()
        published: dict[str, int] = {}
        with transaction.atomic(), connection.cursor() as cur:
            # A short statement over many rows: compiling it (JIT) costs more than it saves.
            cur.execute("SET LOCAL jit = off")
            cur.execute(
                f"SELECT e.type, {state} AS state, count(*), min(e.published_at), min(e.occurred_at) "  # noqa: S608 - our SQL
                f"{unhandled} GROUP BY 1, 2 UNION ALL "
                f"SELECT e.type, '{PUBLISHED}', count(*), NULL, NULL FROM {table} e WHERE {where} GROUP BY 1",
                params,
            )
            for event_type, st, n, first_published, first_occurred in cur.fetchall():
                if st == PUBLISHED:
                    published[event_type] = n
                    continue
                finding.add(event_type, st, n)
                finding.note_unaccounted(st, first_published, first_occurred)
        for event_type, n in published.items():
            counts = finding.counts.get(event_type)
            finding.add(event_type, HANDLED, n - (counts.published if counts else 0))
        if budget > 0 and any(c.missing for c in finding.counts.values()):
            with connection.cursor() as cur:
                cur.execute(
                    f"SELECT e.id {unhandled} AND {state} = '{MISSING}' "  # noqa: S608
                    "ORDER BY e.published_at, e.id LIMIT %(budget)s",
                    {**params, "budget": budget},
                )
                finding.to_resend = [row[0] for row in cur.fetchall()]  # ids: backfill loads them
        return finding
