"""The billing calendar, shared by every context: today's date and period arithmetic (no models).

A period k of an agreement starts at ``start + k * (interval_count * interval)``,
always computed from the anchor (the start date), so month ends keep their day:
Jan 31 -> Feb 28 (29 in leap years) -> Mar 31. A period's end is exclusive: it is
the next period's start.
"""

from __future__ import annotations

from calendar import monthrange
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone

INTERVALS = ("day", "week", "month", "year")


def billing_today() -> date:
    """Today in BILLING_TIME_ZONE: the calendar periods, the daily run and changes are dated in."""
    return timezone.now().astimezone(ZoneInfo(settings.BILLING_TIME_ZONE)).date()


def period_start(anchor: date, interval: str, count: int, k: int) -> date:
    """Start of period ``k`` (0-based) of an agreement anchored at ``anchor``."""
    n = k * count
    if interval == "day":
        return anchor + timedelta(days=n)
    if interval == "week":
        return anchor + timedelta(weeks=n)
    if interval == "month":
        return add_months(anchor, n)
    if interval == "year":
        return add_months(anchor, 12 * n)
    raise ValueError(f"unknown interval {interval!r}; expected one of {INTERVALS}")


def add_months(day: date, months: int) -> date:
    """``day`` plus ``months``, the day clamped to the month's length (Jan 31 + 1 = Feb 28/29)."""
    years, month0 = divmod(day.month - 1 + months, 12)
    year, month = day.year + years, month0 + 1
    return date(year, month, min(day.day, monthrange(year, month)[1]))


def period_index_on(anchor: date, interval: str, count: int, day: date) -> int:
    """Index of the period containing ``day`` (-1 if before the anchor)."""
    if day < anchor:
        return -1
    if interval in ("day", "week"):
        length = count * (7 if interval == "week" else 1)
        return (day - anchor).days // length
    months = (day.year - anchor.year) * 12 + (day.month - anchor.month)
    step = count * (12 if interval == "year" else 1)
    k = max(months // step, 0)
    # adjust for day-of-month clamping
    while period_start(anchor, interval, count, k + 1) <= day:
        k += 1
    while k > 0 and period_start(anchor, interval, count, k) > day:
        k -= 1
    return k


def next_period_start(anchor: date, interval: str, count: int, day: date) -> date:
    """The first period start strictly after ``day`` (``anchor`` if ``day`` is before it)."""
    return period_start(anchor, interval, count, period_index_on(anchor, interval, count, day) + 1)
