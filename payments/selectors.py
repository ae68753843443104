"""Reads of payments for operators: charges waiting at the gateway's pace with a forecast of when
they are done, charges due and not yet sent to a charging worker, and the dunning retries
scheduled per day. Read-only and cheap (the Messaging page
runs them on every view): the waiting charges are counted up to a bound from the status index, the
planner's estimate beyond it; the retries are read from the partial index ``payment_due``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db.models import CharField, Count, F, Min, Value
from django.db.models.functions import Cast, Concat, TruncDate
from django.utils import timezone

from events.operations.counts import bounded_count, count_text, planner_estimate

from .gateway import maybe_charged_try
from .models import Payment, PaymentAttempt
from .services.charging import outcomes_unknown
from .services.dispatching import charges_bound, charges_due

P = Payment.Status
# Waiting charges counted exactly up to this many (an index read of some tens of milliseconds;
# 100,000 is over a quarter of an hour at 100 charges/s), the planner's estimate beyond.
COUNT_LIMIT = 100_000


@dataclass(frozen=True)
class ChargeForecast:
    """Charges waiting (their message queued, or at the gateway now) and when, at the gateway's
    rate limit, the last of them is done."""

    pending: int
    more: bool  # more than ``pending`` (the count stopped at its bound)
    estimate: int | None  # the planner's figure when the count stopped
    rate: float  # charges per second (PAYMENT_RATE_LIMIT_PER_SECOND; 0: no limit)
    now: datetime

    @property
    def expected(self) -> int:
        """The best figure to forecast with: the count, or the estimate when it says more."""
        return max(self.pending, self.estimate or 0) if self.more else self.pending

    @property
    def done_by(self) -> datetime | None:
        """When the last waiting charge is done at the full rate (to the next minute); None
        without a limit or with nothing waiting."""
        if self.rate <= 0 or self.expected == 0:
            return None
        done = self.now + timedelta(seconds=self.expected / self.rate)
        whole = done.replace(second=0, microsecond=0)
        return whole if whole == done else whole + timedelta(minutes=1)

    @property
    def text(self) -> str:
        """E.g. ``3,200 pending at 100/s: done by 14:20 UTC``."""
        if self.expected == 0:
            return "No charges pending."
        count = f"{self.pending:,}"
        if self.more:
            count = count_text(self.pending, more=True, estimate=self.estimate)
        if self.rate <= 0:
            return f"{count} pending; no gateway rate limit (PAYMENT_RATE_LIMIT_PER_SECOND): no forecast."
        done = timezone.localtime(self.done_by)
        now = timezone.localtime(self.now)
        when = f"{done:%H:%M}" if done.date() == now.date() else f"{done:%Y-%m-%d %H:%M}"
        if not self.more:
            verb = "done by"
        elif self.expected > self.pending:
            verb = "done by about"  # at the planner's figure
        else:
            verb = "done no sooner than"  # the planner knows no more than the bound: a lower bound
        return f"{count} pending at {self.rate:,g}/s: {verb} {when} {done:%Z}."


def payments_charge_forecast(*, now: datetime | None = None) -> ChargeForecast:
    """How many charges wait (pending or processing) and when the gateway's pace gets them done."""
    waiting = Payment.objects.filter(status__in=[P.PENDING, P.PROCESSING])
    pending, more = bounded_count(waiting, COUNT_LIMIT)
    return ChargeForecast(
        pending=pending,
        more=more,
        estimate=planner_estimate(waiting) if more else None,
        rate=float(settings.PAYMENT_RATE_LIMIT_PER_SECOND),
        now=now or timezone.now(),
    )


@dataclass(frozen=True)
class UnsentCharges:
    """Payments due whose charge no dispatch pass or sweep has sent yet (services/dispatching.py).
    A moment's worth is normal (a commit's kick on its way); a count that stays means no pass
    runs: no worker serves the payments task queue, or the kicks and beat's sweep are both down."""

    count: int
    more: bool
    oldest: datetime | None  # due since
    sweep_seconds: int
    bound: int | None  # charges queued ahead of the gateway at most (None: no bound)

    @property
    def count_text(self) -> str:
        return count_text(self.count, more=True) if self.more else f"{self.count:,}"

    @property
    def text(self) -> str:
        if self.count == 0:
            return "Every due charge is sent to the charging workers."
        since = timezone.localtime(self.oldest) if self.oldest else None
        oldest = f", the oldest due since {since:%Y-%m-%d %H:%M:%S %Z}" if since else ""
        ahead = "all" if self.bound is None else f"{self.bound:,}"
        return (
            f"{self.count_text} due and not yet sent to a charging worker{oldest}. A dispatch pass "
            f"sends them when kicked, the retry sweep every {self.sweep_seconds} s, at most {ahead} "
            "queued ahead of the gateway (the rest as the queue drains); if the oldest grows old, "
            "check that a worker serves the default and payments task queues and that beat runs."
        )


def payments_oldest_unsent() -> datetime | None:
    """Since when the oldest due charge waits to be sent (an index read of ``payment_due``)."""
    return charges_due().order_by("next_attempt_at").values_list("next_attempt_at", flat=True).first()


def payments_unsent() -> UnsentCharges:
    """The due charges not yet sent, counted up to the bound, from the partial index ``payment_due``."""
    count, more = bounded_count(charges_due(), COUNT_LIMIT)
    oldest = payments_oldest_unsent() if count else None
    return UnsentCharges(count, more, oldest, settings.PAYMENT_RETRY_SWEEP_SECONDS, charges_bound())


def payments_retries_by_day(*, now: datetime | None = None) -> list[tuple[date, int]]:
    """Dunning retries still to come (soft declines, a gateway that kept failing), per day of their
    next attempt (current time zone), soonest first."""
    rows = (
        Payment.objects.filter(status=P.RETRY_SCHEDULED, next_attempt_at__gt=now or timezone.now())
        .annotate(day=TruncDate("next_attempt_at"))
        .values("day")
        .annotate(n=Count("pk"))
        .order_by("day")
    )
    return [(r["day"], r["n"]) for r in rows]


# Candidates read per check: a bound on its work, not on what it reports (it says "at least").
OUTCOME_UNKNOWN_READ = 200


@dataclass(frozen=True)
class UnknownOutcomes:
    keys: list[str]  # the payments' current keys, oldest unsettled try first
    oldest: datetime | None  # when the oldest of those tries started
    more: bool  # more candidates than were read


def payments_outcome_unknown(started_before: datetime) -> UnknownOutcomes:
    """Live payments (pending, processing, retry scheduled) whose current key has a try started
    before ``started_before`` that may have charged (``gateway.maybe_charged``: the partial index
    ``attempt_maybe_charged`` holds those tries) and that no answer since has settled
    (``charging.outcome_unknown``, judged per payment)."""
    current_key = Concat(  # the payment's current key, as Payment.idempotency_key writes it
        Value("pay-"),
        Cast("payment_id", CharField()),
        Value("#"),
        Cast(F("payment__dunning_step") + 1, CharField()),
    )
    rows = list(
        PaymentAttempt.objects.filter(
            maybe_charged_try(),
            started_at__lt=started_before,
            payment__status__in=[P.PENDING, P.PROCESSING, P.RETRY_SCHEDULED],
        )
        .annotate(current=current_key)
        .filter(idempotency_key=F("current"))
        .values("payment_id")
        .annotate(first=Min("started_at"))
        .order_by("first")
        .values_list("payment_id", "first")[: OUTCOME_UNKNOWN_READ + 1]
    )
    more = len(rows) > OUTCOME_UNKNOWN_READ
    since = dict(rows[:OUTCOME_UNKNOWN_READ])
    payments = Payment.objects.in_bulk(list(since))
    unknown_ids = outcomes_unknown(list(payments.values()))
    unknown = [payments[pk] for pk in since if pk in unknown_ids]
    return UnknownOutcomes(
        [p.idempotency_key for p in unknown], since[unknown[0].pk] if unknown else None, more
    )
