"""Collecting an invoice: one payment per invoice, charged at the gateway's pace, through the
payment state machine (payments/states.py). Here a charge is started (its rate-limit token, then
its payment claimed) and sent; services/answers.py records the gateway's answer, and
services/charge_lists.py runs a charge alone or a message's list of them.

Never charges twice: every try of a dunning step uses the same idempotency key, so a retry after
a lost response gets the gateway's original result. Never charges a closed invoice: once
``invoice.voided`` has arrived (``invoice_closed_at``), pending and scheduled charges are
cancelled, a charge message that arrives later does nothing, and a charge that was already in
flight and succeeds anyway is refunded (services/refunds.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.backoff import backoff
from core.bulk import update_rows
from core.task_options import soft_limit_deferred
from events import contracts
from events.operations import metrics
from events.publishing import record_change

from .. import ratelimit, states
from ..gateway import TRANSIENT, ChargeResult, gateway, maybe_charged, refused_request
from ..models import Payment, PaymentAttempt

logger = logging.getLogger(__name__)
P = Payment.Status
Charge = tuple[str, int | None]  # (payment id, dunning step)


def payment_data(p: Payment) -> dict[str, Any]:
    return {
        "payment_id": str(p.id),
        "invoice_id": p.invoice_id,
        "amount_minor": p.amount_minor,
        "currency": p.currency,
    }


def emit(p: Payment, event_type: str, data: dict[str, Any]) -> None:
    """Save ``p`` with its next version and record its event, in the caller's transaction."""
    record_change(sender=Payment, obj=p, type=event_type, data=data)


def count(outcome: str, n: int = 1) -> None:
    """Count ``n`` payments reaching ``outcome`` once the caller's transaction commits: one rolled
    back is recorded again (alone, by a retry) and counted then."""
    transaction.on_commit(lambda: metrics.PAYMENTS.labels(outcome).inc(n))


def cancel(p: Payment, reason: str) -> None:
    """Stop collecting ``p`` (its invoice is closed); records ``payment.cancelled``."""
    states.transition(p, P.CANCELLED)
    p.next_attempt_at = None
    emit(p, contracts.PAYMENT_CANCELLED, {**payment_data(p), "reason": reason[:500]})
    count("cancelled")


def transient_delay(failures: int) -> float:
    """How long a charge or refund waits after ``failures`` transient errors in a row."""
    return backoff(
        failures,
        base=settings.PAYMENT_TRANSIENT_BACKOFF_SECONDS,
        maximum=settings.PAYMENT_TRANSIENT_BACKOFF_MAX_SECONDS,
    )


def lease_end(after_seconds: float = 0) -> datetime:
    """When the retry sweep takes up a payment whose charge is queued to run in ``after_seconds``."""
    return timezone.now() + timedelta(seconds=after_seconds + settings.PAYMENT_CHARGE_LEASE_SECONDS)


NOT_SENT = "not_sent"  # an attempt's outcome: held back here (no rate-limit token), never sent


def outcome_unknown(p: Payment) -> bool:
    """Whether a try of the current step sent to the gateway may have charged without our hearing
    it: one with no answer (a timeout, a dropped connection, a worker that died before recording),
    a 409 (its key's first request still in progress) or an answer the adapter did not understand,
    and no definite answer since (a charge, a decline). A 429 or 5xx answers only its own request
    and settles nothing about an earlier one, nor does a refusal of the request itself (a 401
    after a key was rotated, say). Only asking again with the key tells. A try answered
    "succeeded" on a payment not succeeded took the money for sure: its answer came after the
    sweep had taken the payment over (stale "processing"), so only its attempt recorded it; asking
    again replays the success, and it is recorded (and refunded if the invoice is closed). A try
    the local rate limiter held back was never sent: it tells nothing, and asking "again" would be
    a first charge (of an invoice maybe voided since)."""
    return p.pk in outcomes_unknown([p])


def outcomes_unknown(payments: Sequence[Payment]) -> set[Any]:
    """The ids of those of ``payments`` whose outcome is unknown (``outcome_unknown``): their tries
    read in one query."""
    keys = {p.pk: p.idempotency_key for p in payments}
    tries: dict[Any, list[tuple[datetime | None, str, int | None]]] = {pk: [] for pk in keys}
    for payment_id, key, *answer in (
        PaymentAttempt.objects.filter(payment_id__in=list(keys))
        .exclude(outcome=NOT_SENT)
        .order_by("payment_id", "started_at", "pk")
        .values_list("payment_id", "idempotency_key", "finished_at", "outcome", "http_status")
    ):
        if key == keys[payment_id]:  # the tries of its current key
            tries[payment_id].append(tuple(answer))  # type: ignore[arg-type]
    return {pk for pk, of_key in tries.items() if _tries_outcome_unknown(of_key)}


def _tries_outcome_unknown(tries: Iterable[tuple[datetime | None, str, int | None]]) -> bool:
    """``outcome_unknown`` of a key's sent tries, oldest first: (finished_at, outcome, http_status)."""
    unknown = False
    for finished_at, outcome, http_status in tries:
        if outcome == "succeeded":
            return True  # the gateway replays a key's charge: no later answer undoes it
        if finished_at is None or (outcome == TRANSIENT and maybe_charged(http_status)):
            unknown = True
        elif outcome != TRANSIENT and not refused_request(http_status):
            unknown = False  # a charge declined: the gateway looked at the key
    return unknown


def _claim_all(charges: Sequence[Charge]) -> dict[str, tuple[Payment, PaymentAttempt]]:
    """Claim the payments of these (payment id, dunning step) that are to be charged now, in one
    transaction: locked by one statement in key order (two lists never wait on each other in a
    cycle), each decided as ``_claimable`` decides, the claimed ones written in one statement and
    their attempts in another. A payment named more than once is claimed once, for the step it is
    at if any names it."""
    steps: dict[str, set[int | None]] = {}
    for payment_id, step in charges:
        steps.setdefault(str(payment_id), set()).add(step)
    with transaction.atomic():
        locked = Payment.objects.select_for_update().filter(pk__in=steps).order_by("pk")
        claimed = [p for p in locked if _claimable(p, _named_step(p, steps[str(p.pk)]))]
        if not claimed:
            return {}
        update_rows(claimed, ["status", "updated_at"])
        attempts = PaymentAttempt.objects.bulk_create(
            [PaymentAttempt(payment=p, idempotency_key=p.idempotency_key) for p in claimed]
        )
    return {str(p.pk): (p, a) for p, a in zip(claimed, attempts, strict=True)}


def _named_step(payment: Payment, named: set[int | None]) -> int | None:
    """Of the steps a list names a payment for, the one it is to be charged for if any."""
    if None in named:
        return None
    return payment.dunning_step if payment.dunning_step in named else next(iter(named))  # else: skipped


def _claimable(payment: Payment, step: int | None) -> bool:
    """Whether a locked payment is to be charged now; if so it is "processing" (not saved)."""
    if payment.status not in states.CHARGEABLE:
        return False  # done already, or cancelled (a duplicate task, a late message): nothing to do
    if step is not None and step != payment.dunning_step:
        # A copy of a message whose step is decided (a dispatch whose send failed part-way sends
        # its batch again; an operator's "retry now" while a charge was queued): the next step is
        # charged when it is due, not now.
        return False
    if payment.invoice_closed_at is not None and payment.status != P.PROCESSING:
        if not outcome_unknown(payment):
            cancel(payment, f"invoice closed: {payment.invoice_closed_reason}")
            return False
        # The last try's answer was lost: ask again with the same key. The gateway replays the
        # original result; if it had charged, the success is refunded.
    if states.taken_by_another_worker(payment):
        return False  # another worker is charging it right now
    states.transition(payment, P.PROCESSING)
    return True


@dataclass(frozen=True)
class Started:
    """A charge claimed (its payment "processing", its attempt open) once its rate-limit token was
    due: what the gateway call needs, and nothing that needs the database. Not ``sent``: no token
    came in time, and it is recorded as held back, with no call."""

    payment_id: str
    attempt_id: int
    idempotency_key: str
    amount_minor: int
    currency: str
    customer: str
    sent: bool


def charge_start(
    *, payment_id: str, step: int | None = None, while_waiting: Callable[[float], None] | None = None
) -> Started | None:
    """``charges_start`` of one; its token given back if it is not claimed."""
    wave = charges_start([(payment_id, step)], while_waiting=while_waiting)
    if wave.unused_tokens:
        ratelimit.give_back("gateway", wave.unused_tokens)
    return wave.started[0]


@dataclass(frozen=True)
class Wave:
    """Charges started together: each one's ``Started``, or None (nothing to charge); and the
    tokens reserved for those not claimed, for the caller to give back once the others are sent
    (a claim commits first: nothing may stand between it and the sends)."""

    started: list[Started | None]
    unused_tokens: int


def charges_start(charges: Sequence[Charge], *, while_waiting: Callable[[float], None] | None = None) -> Wave:
    """Wait for a rate-limit token for each charge, then claim their payments together (the
    database's part before the gateway), at most ``ratelimit.burst`` of them: the tokens were due
    together, so they may go to the gateway together. Claimed only once they can go at once: an
    invoice voided during the wait finds its payment not claimed and cancels it, and a worker dying
    then leaves no try whose outcome is unknown. None for each with nothing to charge (done,
    cancelled, another worker's, a copy for a decided ``step``, named twice). ``while_waiting``:
    see ``ratelimit.acquire``."""
    rate = settings.PAYMENT_RATE_LIMIT_PER_SECOND
    if not 0 < len(charges) <= ratelimit.burst(rate):
        raise ValueError(f"{len(charges)} charges at once: 1 to {ratelimit.burst(rate):g} (ratelimit.burst)")
    sent = ratelimit.acquire("gateway", rate, n=len(charges), while_waiting=while_waiting)
    started: list[Started | None] = []
    try:
        # a soft time limit from the claim on is raised once the claimed tries are known, with them
        with soft_limit_deferred():
            claimed = _claim_all(charges)
            for payment_id, _step in charges:
                taken = claimed.pop(str(payment_id), None)
                started.append(None if taken is None else _started(*taken, sent=sent))
    except SoftTimeLimitExceeded as exc:
        exc.claimed = [s for s in started if s is not None]  # type: ignore[attr-defined]
        raise
    return Wave(started, started.count(None) if sent else 0)


def _started(payment: Payment, attempt: PaymentAttempt, *, sent: bool) -> Started:
    return Started(
        payment_id=str(payment.pk),
        attempt_id=attempt.pk,
        idempotency_key=payment.idempotency_key,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        customer=payment.customer_ref,
        sent=sent,
    )


def charge_send(started: Started) -> ChargeResult:
    """Ask the gateway (the charge's token is due). No database: any thread may run it."""
    if not started.sent:
        return ChargeResult(False, error_class=TRANSIENT, message="local rate limit: no token in time")
    return gateway().charge(
        idempotency_key=started.idempotency_key,
        amount_minor=started.amount_minor,
        currency=started.currency,
        customer=started.customer,
    )
