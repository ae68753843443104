"""Giving money back through the gateway: credit notes, and charges taken on closed invoices.

A refund is requested once per cause (its unique ``key``), waits until the charge it gives back
has succeeded (causes can arrive first), and is sent with an idempotency key derived from its id:
a retry after a lost answer never refunds twice. A charge taken on a closed invoice also raises
``alert.charge_on_closed_invoice``; a refund the gateway refuses raises ``alert.refund_failed``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from core.backoff import backoff
from events import contracts
from events.operations import metrics
from events.operations.alerts import record_alert
from events.publishing import record_change

from .. import states
from ..dispatch import enqueue_refund
from ..gateway import HARD, SOFT, TRANSIENT, ChargeResult, gateway, refused_request
from ..models import Payment, Refund

logger = logging.getLogger(__name__)
R = Refund.Status
P = Payment.Status
REFUNDABLE = (P.SUCCEEDED, P.REFUNDED)  # the payment's charge exists at the gateway


def _lease() -> Any:
    return timezone.now() + timedelta(seconds=settings.PAYMENT_CHARGE_LEASE_SECONDS)


def _send_when_committed(refund: Refund) -> None:
    refund.next_attempt_at = _lease()
    refund.save(update_fields=["status", "next_attempt_at", "payment", "operator_retries", "updated_at"])
    refund_id = str(refund.id)
    transaction.on_commit(lambda: enqueue_refund(refund_id), robust=True)


def refund_request(
    *, key: str, invoice_id: str, payment: Payment | None, amount_minor: int, currency: str, reason: str
) -> tuple[Refund, bool]:
    """Ask for a refund once per ``key`` (in the caller's transaction). Returns (refund, created)."""
    refund, created = Refund.objects.get_or_create(
        key=key,
        defaults={
            "id": uuid.uuid4(),
            "invoice_id": invoice_id,
            "payment": payment,
            "amount_minor": amount_minor,
            "currency": currency,
            "reason": reason[:500],
        },
    )
    if created and payment is not None and payment.status in REFUNDABLE:
        _send_when_committed(refund)
    return refund, created


def refund_for_closed_invoice(p: Payment) -> None:
    """Money was taken on an invoice that had been voided (its charge was in flight): give all of
    it back and tell the operators."""
    already = (
        Refund.objects.filter(payment=p).exclude(status=R.FAILED).aggregate(s=Sum("amount_minor"))["s"] or 0
    )
    amount = p.amount_minor - already
    if amount <= 0:
        return
    reason = f"charged after its invoice was closed ({p.invoice_closed_reason})"
    _, created = refund_request(
        key=f"closed:{p.invoice_id}",
        invoice_id=p.invoice_id,
        payment=p,
        amount_minor=amount,
        currency=p.currency,
        reason=reason,
    )
    if created:
        logger.warning("payment %s: %s; refunding %s %s", p.id, reason, amount, p.currency)
        record_alert(
            sender=Payment,
            check="charge_on_closed_invoice",
            about=str(p.id),
            severity="warning",
            summary=(
                f"Invoice {p.invoice_number} was voided while its charge was in flight; the charge "
                f"succeeded ({p.gateway_reference}) and is being refunded in full."
            ),
            details={"payment_id": str(p.id), "invoice_id": p.invoice_id, "amount_minor": amount},
        )


def refunds_release(payments: Sequence[Payment]) -> None:
    """These payments' charges succeeded: refunds that were waiting for them can go (one statement
    for all, the refunds locked in key order)."""
    by_invoice = {p.invoice_id: p for p in payments}
    if not by_invoice:
        return
    waiting = Refund.objects.select_for_update().filter(
        invoice_id__in=by_invoice, status=R.PENDING, next_attempt_at__isnull=True
    )
    for refund in waiting.order_by("pk"):
        refund.payment = by_invoice[refund.invoice_id]
        _send_when_committed(refund)


def _claim(refund_id: str) -> tuple[Refund, Payment] | None:
    with transaction.atomic():
        refund = Refund.objects.select_for_update().filter(pk=refund_id).first()
        if refund is None or refund.status not in (R.PENDING, R.PROCESSING):
            return None
        if states.taken_by_another_worker(refund):
            return None  # another worker is on it
        payment = refund.payment
        if payment is None or payment.status not in REFUNDABLE or not payment.gateway_reference:
            return None  # waits for its charge (refunds_release sends it)
        states.transition(refund, R.PROCESSING)
        refund.attempts += 1
        refund.save(update_fields=["status", "attempts", "updated_at"])
    return refund, payment


def payment_refund(*, refund_id: str) -> str:
    """Send one refund to the gateway and record the answer. Idempotent. Returns the outcome."""
    claimed = _claim(refund_id)
    if claimed is None:
        return "skipped"
    refund, payment = claimed
    result = gateway().refund(
        idempotency_key=refund.idempotency_key,
        charge_reference=payment.gateway_reference,
        amount_minor=refund.amount_minor,
        currency=refund.currency,
    )
    return _record(refund_id, result, key=refund.idempotency_key)


@transaction.atomic
def _record(refund_id: str, result: ChargeResult, *, key: str) -> str:
    """Record the answer to the try of ``refund_id`` sent with ``key``, in one transaction."""
    refund = Refund.objects.select_for_update().get(pk=refund_id)
    if refund.status != R.PROCESSING:
        return refund.status
    if key != refund.idempotency_key:
        # The answer to a try before an operator's retry (a worker that stalled past the stale
        # takeover): the retry's own try is in flight with its own key, and its answer decides.
        # Applied, a late refusal would fail the refund and that answer, maybe a refund made,
        # would find it no longer "processing"; a late success contradicts the refusal that
        # allowed the retry, and is logged for the operator.
        log = logger.error if result.ok else logger.warning
        log(
            "refund %s: a late answer to key %s (now %s) is not recorded: %s",
            refund_id,
            key,
            refund.idempotency_key,
            "refunded" if result.ok else result.error_class,
        )
        return refund.status
    p = Payment.objects.select_for_update().get(pk=refund.payment_id)
    if result.ok:
        states.transition(refund, R.SUCCEEDED)
        refund.gateway_reference, refund.next_attempt_at = result.reference, None
        refund.save()
        if refund.key.startswith("closed:"):
            states.transition(p, P.REFUNDED)
        record_change(
            sender=Payment,
            obj=p,
            type=contracts.PAYMENT_REFUNDED,
            data={
                "payment_id": str(p.id),
                "invoice_id": p.invoice_id,
                "amount_minor": p.amount_minor,
                "currency": p.currency,
                "refund_id": str(refund.id),
                "refunded_minor": refund.amount_minor,
                "gateway_reference": result.reference,
                "reason": refund.reason,
            },
        )
        metrics.PAYMENTS.labels("refunded").inc()
        return "succeeded"
    earlier = refund.last_error or "no answer recorded"  # the try before this one's, if any
    refund.last_error = f"{result.error_class}: {result.message}"[:500]
    if result.error_class == TRANSIENT:
        delay = backoff(
            refund.attempts,
            base=settings.PAYMENT_TRANSIENT_BACKOFF_SECONDS,
            maximum=settings.PAYMENT_TRANSIENT_BACKOFF_MAX_SECONDS,
        )
        states.transition(refund, R.PENDING)
        refund.next_attempt_at = timezone.now() + timedelta(
            seconds=delay + settings.PAYMENT_CHARGE_LEASE_SECONDS
        )
        refund.save()
        transaction.on_commit(lambda: enqueue_refund(refund_id, delay), robust=True)
        return "transient"
    states.transition(refund, R.FAILED)
    refund.next_attempt_at = None
    refund.save()
    record_alert(
        sender=Refund,
        check="refund_failed",
        about=str(refund.id),
        version=refund.attempts,
        severity="critical",
        summary=(
            f"Refund of {refund.amount_minor} {refund.currency} on {p.invoice_number} was refused: "
            f"{result.message[:200]}. Give it back by hand, or retry it in admin (Payments -> Refunds)."
            + (
                f" An earlier try with key {refund.idempotency_key} got no definite answer ({earlier[:120]}) "
                "and may have refunded: check at the gateway first, since a retry uses a new key."
                # an earlier try that settled nothing (a timeout, a worker that died before
                # recording, a 429 or 5xx that took nothing), not the refusal of the key before an
                # operator's retry: that one was a definite answer
                if refused_request(result.http_status)
                and refund.attempts > 1
                and not earlier.startswith((f"{HARD}:", f"{SOFT}:"))
                else ""
            )
        ),
        details={"refund_id": str(refund.id), "payment_id": str(p.id), "invoice_id": p.invoice_id},
    )
    return "failed"


@transaction.atomic
def refund_retry_now(*, refund_id: str) -> bool:
    """Operator: send a failed (or waiting) refund again. Returns whether it was sent."""
    refund = Refund.objects.select_for_update().get(pk=refund_id)
    if refund.status not in (R.FAILED, R.PENDING):
        return False
    if refund.status == R.FAILED:
        refund.operator_retries += 1  # the refused key would only be replayed
    states.transition(refund, R.PENDING)
    if refund.payment is None or refund.payment.status not in REFUNDABLE:
        refund.save(update_fields=["status", "operator_retries", "updated_at"])
        return False
    _send_when_committed(refund)
    return True


def refunds_retry_due(*, limit: int = 1000) -> int:
    """Send refunds whose time has come (a lost message, a backoff over) and rescue stuck ones."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.PAYMENT_PROCESSING_STALE_SECONDS)
    with transaction.atomic():
        due = list(
            Refund.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(
                Q(next_attempt_at__lte=now)
                # waiting for a charge that has succeeded since (belt and braces: the success
                # releases its refunds itself)
                | Q(
                    next_attempt_at__isnull=True,
                    payment__status__in=REFUNDABLE,
                    payment__gateway_reference__gt="",
                ),
                status=R.PENDING,
            )
            .values_list("pk", flat=True)[:limit]
        )
        stuck = list(
            Refund.objects.select_for_update(skip_locked=True)
            .filter(status=R.PROCESSING, updated_at__lt=stale)
            .values_list("pk", flat=True)[:limit]
        )
        Refund.objects.filter(pk__in=due + stuck).update(
            status=R.PENDING, next_attempt_at=_lease(), updated_at=now
        )
    for pk in due + stuck:
        enqueue_refund(str(pk))
    return len(due) + len(stuck)
