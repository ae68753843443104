"""The in-process source: the producer's event store is in this database.

Set-based: one statement counts every audited event by type and state (the anti-join of the
event store with the consumer's processed-event rows happens in PostgreSQL), and a second one,
only when something is missing, fetches the oldest missing ids up to the pass's budget. The
process holds a few rows whatever the size of the store. An incremental pass reads only rows
published since the watermark, through the index ``outbox_published``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection

from ..models import OutboxEvent
from .accounting import JOINS, MISSING, Finding, state_sql


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
        state = state_sql("e.published_at >= %(horizon)s")
        table = OutboxEvent._meta.db_table
        finding = Finding()
        with connection.cursor() as cur:
            cur.execute(
                f"SELECT e.type, {state} AS state, count(*), min(e.published_at), min(e.occurred_at) "  # noqa: S608 - our SQL
                f"FROM {table} e {JOINS} WHERE {where} GROUP BY 1, 2",
                params,
            )
            for event_type, st, n, first_published, first_occurred in cur.fetchall():
                finding.add(event_type, st, n)
                finding.note_unaccounted(st, first_published, first_occurred)
            missing = sum(c.missing for c in finding.counts.values())
            if missing and budget > 0:
                cur.execute(
                    f"SELECT e.id FROM {table} e {JOINS} WHERE {where} AND {state} = '{MISSING}' "  # noqa: S608
                    "ORDER BY e.published_at, e.id LIMIT %(budget)s",
                    {**params, "budget": budget},
                )
                finding.to_resend = [row[0] for row in cur.fetchall()]  # ids: backfill loads them
        return finding
