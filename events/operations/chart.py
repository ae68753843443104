"""The Messaging page's 30-day chart: events published, events handled and invoices issued per day.

Counting 30 days of the event store is a read of a big table, so the page never does it: beat's
"Messaging chart" task (``chart_refresh``, every MESSAGING_CHART_SECONDS, on the monitoring queue)
counts and keeps the daily figures in a heartbeat row, and the page reads them back
(``chart_data``) as the JSON that Chart.js (vendored under events/static) draws.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from .. import contracts
from ..models import Heartbeat, OutboxEvent, ProcessedEvent
from .health import heartbeat_record

DAYS = 30
CHART_HEARTBEAT = "messaging_chart"  # its detail holds the chart's daily counts
SERIES = {  # key: what the legend says
    "published": "events published",
    "handled": "events handled",
    "invoices": "invoices issued",
}


def chart_days(today: date | None = None) -> list[date]:
    """The chart's days, oldest first, ending today (in the current time zone, as counted)."""
    today = today or timezone.localdate()
    return [today - timedelta(days=DAYS - 1 - i) for i in range(DAYS)]


def _daily_counts() -> dict[str, dict[date, int]]:
    start = timezone.make_aware(datetime.combine(chart_days()[0], time.min))

    def per_day(qs: QuerySet[Any], field: str) -> dict[date, int]:
        rows = qs.filter(**{f"{field}__gte": start}).annotate(day=TruncDate(field)).values("day")
        return {r["day"]: r["n"] for r in rows.annotate(n=Count("pk")).order_by()}

    return {
        "published": per_day(OutboxEvent.objects.exclude(published_at=None), "published_at"),
        "handled": per_day(ProcessedEvent.objects.all(), "processed_at"),
        "invoices": per_day(OutboxEvent.objects.filter(type=contracts.INVOICE_ISSUED), "occurred_at"),
    }


def chart_refresh() -> None:
    """Count the chart's three daily series now and keep them for the page. Idempotent."""
    counts = _daily_counts()
    heartbeat_record(
        name=CHART_HEARTBEAT,
        detail={name: {day.isoformat(): n for day, n in series.items()} for name, series in counts.items()},
    )


def chart_data() -> tuple[dict[str, Any], datetime | None]:
    """What the page's chart draws, from the counts ``chart_refresh`` kept (zeros before its first
    run): 30 ISO dates, and per series its legend label, one value per day and the 30 days' total;
    and when they were counted (None: not yet)."""
    beat = Heartbeat.objects.filter(name=CHART_HEARTBEAT).first()
    stored = beat.detail if beat else {}
    days = [d.isoformat() for d in chart_days()]
    series = []
    for key, label in SERIES.items():
        counts = stored.get(key, {})
        values = [int(counts.get(day, 0)) for day in days]
        series.append({"key": key, "label": label, "values": values, "total": sum(values)})
    return {"days": days, "series": series}, (beat.beat_at if beat else None)
