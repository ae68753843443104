"""Recording the gateway's answer to a charge (services/charging.py sends it), in the same
transaction as its consequence: a success and its ``payment.succeeded``, a transient error and
its backoff, a decline and its dunning step or final failure, and, for an invoice closed while
its charge was in flight, a cancel or a refund.

Answers that charged are recorded several in one transaction when a list's charges come back
together (``charged_record``): one lock statement, one write per table, one commit and one kick
of the relay for the lot, each payment going through the same transition and event as one alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection, transaction
from django.utils import timezone

from core.bulk import update_rows
from core.db import drop_broken_connection
from events import contracts
from events.operations.alerts import alert_recorded, record_alert
from events.publishing import record_changes

from .. import states
from ..dispatch import enqueue_charge
from ..gateway import HARD, SOFT, TRANSIENT, ChargeResult, refused_request
from ..models import Payment, PaymentAttempt
from .charging import (
    NOT_SENT,
    Started,
    cancel,
    count,
    emit,
    lease_end,
    outcome_unknown,
    payment_data,
    transient_delay,
)
from .refunds import refund_for_closed_invoice, refunds_release

P = Payment.Status


def charge_finish(started: Started, result: ChargeResult) -> str:
    """Record the gateway's answer and its consequence (one transaction); once more, on a new
    connection, if the first try fails: the answer is only in memory, and a payment left
    "processing" waits for the sweep. Returns the outcome."""
    try:
        return _record(
            started.payment_id, started.attempt_id, result, sent=started.sent, key=started.idempotency_key
        )
    except (DatabaseError, InterfaceError):
        if connection.in_atomic_block:  # the caller's transaction is broken: its caller decides
            raise
        drop_broken_connection()
        return _record(
            started.payment_id, started.attempt_id, result, sent=started.sent, key=started.idempotency_key
        )


@transaction.atomic
def _record(payment_id: str, attempt_id: int, result: ChargeResult, *, key: str, sent: bool = True) -> str:
    """Record the answer to the try ``attempt_id``, sent with ``key``, and its consequence."""
    p = Payment.objects.select_for_update().get(pk=payment_id)
    now = timezone.now()
    PaymentAttempt.objects.filter(pk=attempt_id).update(
        finished_at=now,
        outcome=NOT_SENT if not sent else "succeeded" if result.ok else result.error_class,
        gateway_reference=result.reference,
        http_status=result.http_status,
        error_message=result.message[:500],
    )
    if _of_an_earlier_step(key, p, result):
        return p.status
    if p.status != P.PROCESSING:
        return p.status  # a concurrent duplicate already recorded this step
    if sent and result.ok:
        return _succeeded(p, result)
    # A try never sent (no rate-limit token in time; a soft time limit or a shut-down pool between
    # its claim and its send) is tried again as a transient error is, with its backoff, but reads
    # ``not_sent`` as its outcome, its last error and in billing_payments_total: neither an operator
    # nor an alert on the gateway's errors takes a queue for our own limiter for a failing gateway.
    p.last_error_class = result.error_class if sent else NOT_SENT
    p.last_error_message = result.message[:500]
    if not sent or result.error_class == TRANSIENT:
        if p.invoice_closed_at is not None and not outcome_unknown(p):
            # nothing taken by any try of this key, and nothing more will be tried
            cancel(p, f"invoice closed while its charge was retried: {p.invoice_closed_reason}")
            return "cancelled"
        return _transient(p, now, outcome="transient" if sent else NOT_SENT)
    if refused_request(result.http_status) and outcome_unknown(p):
        # Our request refused (a key, a field) while an earlier try with this key may have
        # charged: failed for good, the operator's retry would charge again with a new key. Tried
        # again with this one (backoff, then the retry sweep) until the gateway answers the key.
        p.last_error_class = TRANSIENT
        return _transient(p, now)
    return _declined(p, result, now)


def _of_an_earlier_step(key: str, p: Payment, result: ChargeResult) -> bool:
    """Whether the answer is to a try of a step before the payment's current one: a worker that
    stalled past the stale sweep records it while another try, of the step the payment has moved
    on to since (a decline the sweep's re-ask replayed, then a retry), is in flight. Only its
    attempt records it: applied, a late decline would move that try's payment on a step (whose
    next try charges again with a new key) or fail it, and the try in flight, which may take the
    money, would find it no longer "processing". An earlier key that charged, whatever the
    payment's state now, contradicts the gateway's replay of the decline that moved it on: no try
    asks about that key again, so it is alerted (``alert.charge_on_earlier_key``)."""
    if key == p.idempotency_key:
        return False
    step = int(key.rpartition("#")[2])  # the key's dunning step, counted from 1
    if result.ok and not alert_recorded(check="charge_on_earlier_key", about=str(p.pk), version=step):
        # (an answer recorded twice, its first commit's reply lost: the payment's lock orders them)
        record_alert(
            sender=Payment,
            check="charge_on_earlier_key",
            about=str(p.pk),  # with the step as its version: ids stay within the outbox's 64 characters
            version=step,
            severity="critical",
            summary=(
                f"Payment for invoice {p.invoice_number}: key {key} charged {p.amount_minor} {p.currency} "
                f"({result.reference}) after the payment had moved on to key {p.idempotency_key} "
                f"({p.status}). The customer may be charged twice: compare at the gateway and refund one."
            ),
            details={
                **payment_data(p),
                "key": key,
                "current_key": p.idempotency_key,
                "reference": result.reference,
            },
        )
    return True


def _succeeded(p: Payment, result: ChargeResult) -> str:
    emit(p, contracts.PAYMENT_SUCCEEDED, _mark_succeeded(p, result))
    count("succeeded")
    if p.invoice_closed_at is not None:  # the charge was in flight when the invoice was voided
        refund_for_closed_invoice(p)
    refunds_release([p])  # refunds (credit notes) that arrived before this success
    return "succeeded"


SUCCEEDED_FIELDS = ("status", "gateway_reference", "next_attempt_at")  # what _mark_succeeded sets


def _mark_succeeded(p: Payment, result: ChargeResult) -> dict[str, Any]:
    """``p`` succeeded (not saved): its ``SUCCEEDED_FIELDS`` set; returns its event's data."""
    states.transition(p, P.SUCCEEDED)
    p.gateway_reference = result.reference
    p.next_attempt_at = None
    return {**payment_data(p), "gateway_reference": result.reference}


@transaction.atomic
def charged_record(answers: Sequence[tuple[Started, ChargeResult]]) -> list[str]:
    """Record answers that charged (sent, and the gateway took the money) in one transaction, as
    ``_record`` records each; returns each one's outcome, in order. The payments are locked by one
    statement in key order (two lists never wait on each other in a cycle). One no longer
    "processing" (a concurrent copy recorded it) keeps its state, as in ``_record``; one whose
    invoice was closed while its charge was in flight goes through ``_succeeded`` alone (its
    refund). A database error rolls back the lot: the caller records them one at a time."""
    if not all(s.sent and r.ok for s, r in answers):
        raise ValueError("charged_record records only answers that charged; record any other alone")
    locked = Payment.objects.select_for_update().filter(pk__in=[s.payment_id for s, _r in answers])
    payments = {str(p.pk): p for p in locked.order_by("pk")}
    now = timezone.now()
    update_rows(
        [
            PaymentAttempt(
                pk=s.attempt_id,
                finished_at=now,
                outcome="succeeded",
                gateway_reference=r.reference,
                http_status=r.http_status,
                error_message=r.message[:500],
            )
            for s, r in answers
        ],
        ["finished_at", "outcome", "gateway_reference", "http_status", "error_message"],
    )
    outcomes: dict[str, str] = {}
    changes = []
    for s, r in answers:
        p = payments[s.payment_id]
        if _of_an_earlier_step(s.idempotency_key, p, r) or p.status != P.PROCESSING:
            outcomes[s.payment_id] = p.status
        elif p.invoice_closed_at is not None:
            outcomes[s.payment_id] = _succeeded(p, r)
        else:
            changes.append((p, contracts.PAYMENT_SUCCEEDED, _mark_succeeded(p, r)))
            outcomes[s.payment_id] = "succeeded"
    if changes:
        record_changes(sender=Payment, changes=changes, fields=SUCCEEDED_FIELDS)
        count("succeeded", len(changes))
        refunds_release([p for p, _type, _data in changes])
    return [outcomes[s.payment_id] for s, _r in answers]


def _transient(p: Payment, now: datetime, outcome: str = "transient") -> str:
    """Try again after a backoff that grows with the tries in a row that settled nothing (transient
    errors, tries not sent); after PAYMENT_TRANSIENT_MAX_RETRIES, the retry sweep's, later."""
    p.transient_failures += 1
    delay = transient_delay(p.transient_failures)
    if p.transient_failures > settings.PAYMENT_TRANSIENT_MAX_RETRIES:
        # The gateway has been failing for a while: leave it to the retry sweep, later.
        states.transition(p, P.RETRY_SCHEDULED)
        p.transient_failures = 0
        p.next_attempt_at = now + timedelta(seconds=settings.PAYMENT_TRANSIENT_BACKOFF_MAX_SECONDS)
        p.save()
    else:
        states.transition(p, P.PENDING)
        p.next_attempt_at = lease_end(delay)  # a charge is queued to run after ``delay``
        p.save()
        payment_id, step = str(p.id), p.dunning_step
        transaction.on_commit(lambda: enqueue_charge(payment_id, step, delay), robust=True)
    count(outcome)
    return outcome


def _declined(p: Payment, result: ChargeResult, now: datetime) -> str:
    closed = p.invoice_closed_at is not None
    final = result.error_class == HARD or p.dunning_step >= len(settings.PAYMENT_DUNNING_DAYS)
    attempts = p.attempts.count()
    if closed:
        pass  # recorded below, then cancelled: no dunning for a closed invoice
    elif result.error_class == SOFT and not final:
        p.dunning_step += 1
        p.transient_failures = 0
        states.transition(p, P.RETRY_SCHEDULED)
        p.next_attempt_at = now + timedelta(days=settings.PAYMENT_DUNNING_DAYS[p.dunning_step - 1])
    else:
        states.transition(p, P.FAILED)
        p.next_attempt_at = None
    emit(
        p,
        contracts.PAYMENT_FAILED,
        {
            **payment_data(p),
            "final": final and not closed,
            "error_class": result.error_class,
            "error_message": result.message[:1000],
            "attempts": attempts,
        },
    )
    if closed:
        cancel(p, f"invoice closed: {p.invoice_closed_reason}")
        return "cancelled"
    count("failed_final" if final else "soft_declined")
    if final:
        _alert_failed(p, result, attempts)
    return "failed_final" if final else "soft_declined"


def _alert_failed(p: Payment, result: ChargeResult, attempts: int) -> None:
    record_alert(
        sender=Payment,
        check="payment_failed",
        about=str(p.id),
        version=p.aggregate_version,
        severity="warning",
        summary=f"Payment for invoice {p.invoice_number} failed for good: {result.message[:200]}",
        details={
            **payment_data(p),
            "customer": p.customer_ref,
            "error_class": result.error_class,
            "attempts": attempts,
        },
    )
