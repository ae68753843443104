"""Billing rules: which periods of an agreement are billable, and at what price.

Pure functions of the projection (``BillableAgreement`` or a row namespace with the same
fields): the daily run asks what is due from its cursor on, the corrections ask what every
period already passed should have cost. Both read the agreement's full history as the
projection holds it, so the answer does not depend on when or in what order events arrived.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from core.calendar import billing_today, period_start  # noqa: F401 - billing_today is re-exported

STOP = "stop"


@dataclass(frozen=True)
class Period:
    index: int
    start: date
    end: date
    amount_minor: int


def evaluate_period(p: Any, k: int) -> Period | str | None:
    """Period ``k`` of ``p``: a billable Period, None (skipped: paused) or STOP (no more periods)."""
    assert p.start_date is not None
    start = period_start(p.start_date, p.interval, p.interval_count, k)
    if p.end_date is not None and start >= p.end_date:
        return STOP
    if p.cancellations:
        effective = date.fromisoformat(p.cancellations[-1][1])  # the latest version wins
        if start >= effective:
            return STOP
    iso = start.isoformat()
    state = "resume"
    for _version, kind, when in p.toggles:  # sorted by version: the last one in force wins
        if when <= iso:
            state = kind
    if state == "pause":
        return None
    amount = None
    for effective_from, amount_minor, _version in p.prices:  # sorted by (effective_from, version)
        if effective_from <= iso:
            amount = amount_minor
    if amount is None:
        return None
    end = period_start(p.start_date, p.interval, p.interval_count, k + 1)
    if p.end_date is not None and p.end_date < end:
        end = p.end_date
    return Period(k, start, end, amount)


def period_bounds(p: Any, k: int) -> tuple[date, date]:
    """Start and (exclusive) end of period ``k``, whether or not it is billable."""
    start = period_start(p.start_date, p.interval, p.interval_count, k)
    end = period_start(p.start_date, p.interval, p.interval_count, k + 1)
    if p.end_date is not None and p.end_date < end:
        end = p.end_date
    return start, end


@dataclass
class AgreementPlan:
    row: Any
    periods: list[Period]
    next_index: int
    next_start: date | None
    flagged: str = ""


def plan_agreement(p: Any, run_date: date, max_periods: int) -> AgreementPlan:
    """The periods due on ``run_date`` (catch-up included) and where the cursor moves."""
    periods: list[Period] = []
    k = p.next_period_index
    while True:
        result = evaluate_period(p, k)
        if result == STOP:
            return AgreementPlan(p, periods, k, None)
        start = period_start(p.start_date, p.interval, p.interval_count, k)
        if start > run_date:
            return AgreementPlan(p, periods, k, start)
        if isinstance(result, Period):
            periods.append(result)
            if len(periods) > max_periods and not p.catchup_approved:
                return AgreementPlan(
                    p,
                    [],
                    p.next_period_index,
                    p.next_period_start,
                    flagged=f"more than {max_periods} periods due on {run_date} (catch-up needs approval)",
                )
        k += 1


def owed_before_cursor(p: Any, from_index: int = 0) -> dict[date, tuple[date, int]]:
    """What each period the daily run has passed (index < the cursor) owes by the full history:
    {period start: (period end, amount)}, amount 0 for a paused, cancelled or ended period."""
    owed: dict[date, tuple[date, int]] = {}
    stopped = False
    for k in range(max(0, from_index), p.next_period_index):
        start, end = period_bounds(p, k)
        result = STOP if stopped else evaluate_period(p, k)
        stopped = result == STOP
        owed[start] = (end, result.amount_minor if isinstance(result, Period) else 0)
    return owed
