"""Cheap counts of big tables: a count that stops at a bound, the planner's estimate beyond it, and
the outbox backlog read that way (the health model's input, with observations.py's queues).

A view, ``messaging_status`` or a probe never counts a big table: the outbox behind a daily run over
100,000 agreements holds 100,000 rows, and an exact ``count(*)`` of them on every view is what made
the Messaging page take seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from ..models import OutboxEvent
from . import metrics


@dataclass
class OutboxStat:
    """The outbox backlog, read cheaply however big it is: counts stop at OUTBOX_COUNT_LIMIT
    (``*_more``: there are more than that), the oldest row comes from an index."""

    unpublished: int
    oldest_unpublished_age: float | None
    failing: int
    unpublished_more: bool = False
    failing_more: bool = False
    estimate: int | None = None  # the planner's figure for the unpublished rows, when counts stop

    @property
    def unpublished_text(self) -> str:
        """The count as shown: `3`, or `more than 10,000 (about 98,000)` once it stopped."""
        return count_text(self.unpublished, more=self.unpublished_more, estimate=self.estimate)

    @property
    def failing_text(self) -> str:
        return f"more than {self.failing:,}" if self.failing_more else str(self.failing)


def bounded_count(qs: QuerySet[Any], limit: int) -> tuple[int, bool]:
    """``(count, more)``: rows of ``qs`` counted up to ``limit`` (``SELECT count(*) FROM (SELECT
    ... LIMIT limit + 1)``), so a view never counts a big table; ``more``: there are more."""
    n = qs.values("pk")[: limit + 1].count()
    return min(n, limit), n > limit


def planner_estimate(qs: QuerySet[Any]) -> int:
    """The planner's estimate of ``qs.count()`` (EXPLAIN: nothing is read), as good as the table's
    statistics (ANALYZE; autovacuum runs it after big changes)."""
    plan = json.loads(qs.values("pk").explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


def count_text(n: int, *, more: bool, estimate: int | None = None) -> str:
    """A bounded count as shown: ``3``, or ``more than 10,000 (about 98,000)`` once it stopped (the
    estimate only when it says more than the bound)."""
    if not more:
        return str(n)
    about = f" (about {estimate:,})" if estimate and estimate > n else ""
    return f"more than {n:,}{about}"


def _estimated_unpublished() -> int | None:
    """What the planner last counted in the unpublished rows' partial index (VACUUM/ANALYZE keep
    it; None before either ran)."""
    with connection.cursor() as cur:
        cur.execute("SELECT reltuples FROM pg_class WHERE relname = 'outbox_unpublished_age'")
        row = cur.fetchone()
    return int(row[0]) if row and row[0] > 0 else None


def outbox_stats() -> OutboxStat:
    """The backlog in a few index reads, with 100 or 1,000,000 rows waiting."""
    limit = settings.OUTBOX_COUNT_LIMIT
    pending = OutboxEvent.objects.filter(published_at__isnull=True)
    # the partial index outbox_unpublished_age, read from its first entry
    oldest = pending.order_by("occurred_at").values_list("occurred_at", flat=True).first()
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    unpublished, more = bounded_count(pending, limit)
    failing, failing_more = bounded_count(pending.filter(attempts__gt=0), limit)
    stat = OutboxStat(
        unpublished=unpublished,
        oldest_unpublished_age=age,
        failing=failing,
        unpublished_more=more,
        failing_more=failing_more,
        estimate=_estimated_unpublished() if more else None,
    )
    metrics.OUTBOX_BACKLOG.set(max(stat.unpublished, stat.estimate or 0))
    metrics.OUTBOX_OLDEST_AGE.set(age)
    return stat
