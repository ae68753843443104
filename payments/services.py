"""Use cases of the payments context: one payment per invoice, charged at the gateway's pace."""

from __future__ import annotations

import logging
import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from events import contracts, metrics
from events.outbox import record_change, record_event

from . import ratelimit
from .gateway import HARD, SOFT, TRANSIENT, ChargeResult, gateway
from .models import Payment, PaymentAttempt

logger = logging.getLogger(__name__)

CLAIMABLE = (Payment.Status.PENDING, Payment.Status.RETRY_SCHEDULED, Payment.Status.PROCESSING)


def _enqueue_charge(payment_id: str, countdown: float = 0) -> None:
    from .tasks import charge_payment

    charge_payment.apply_async(kwargs={"payment_id": payment_id}, countdown=max(0, int(countdown)))


@transaction.atomic
def payment_create_for_invoice(*, data: dict[str, Any]) -> tuple[Payment, bool]:
    """One payment per invoice, however often invoice.issued arrives; the charge is enqueued
    after commit. Returns (payment, created)."""
    payment, created = Payment.objects.get_or_create(
        invoice_id=data["invoice_id"],
        defaults={
            "id": uuid.uuid4(),
            "invoice_number": data["number"],
            "customer_ref": data["customer"]["external_ref"],
            "customer_email": data["customer"]["email"],
            "amount_minor": data["total_minor"],
            "currency": data["currency"],
            "next_attempt_at": _lease_end(),  # its charge is enqueued; the sweep is the fallback
        },
    )
    if created:
        transaction.on_commit(lambda: _enqueue_charge(str(payment.id)), robust=True)
    return payment, created


def _lease_end(after_seconds: float = 0) -> datetime:
    """When the retry sweep takes up a payment whose charge is queued to run in ``after_seconds``."""
    return timezone.now() + timedelta(seconds=after_seconds + settings.PAYMENT_CHARGE_LEASE_SECONDS)


def _claim(payment_id: str) -> tuple[Payment, PaymentAttempt] | None:
    with transaction.atomic():
        payment = Payment.objects.select_for_update().filter(pk=payment_id).first()
        if payment is None or payment.status not in CLAIMABLE:
            return None  # done already (a duplicate task): nothing to do
        stale = timezone.now() - timedelta(seconds=settings.PAYMENT_PROCESSING_STALE_SECONDS)
        if payment.status == Payment.Status.PROCESSING and payment.updated_at > stale:
            return None  # another worker is charging it right now
        payment.status = Payment.Status.PROCESSING
        payment.save(update_fields=["status", "updated_at"])
        attempt = PaymentAttempt.objects.create(payment=payment, idempotency_key=payment.idempotency_key)
    return payment, attempt


def payment_charge(*, payment_id: str) -> str:
    """Charge once (rate-limited), record the attempt and its consequence. Returns the outcome.

    Never charges twice: every try of a dunning step uses the same idempotency key, so a
    retry after a lost response gets the gateway's original result.
    """
    claimed = _claim(payment_id)
    if claimed is None:
        return "skipped"
    payment, attempt = claimed
    if not ratelimit.acquire("gateway", settings.PAYMENT_RATE_LIMIT_PER_SECOND):
        result = ChargeResult(False, error_class=TRANSIENT, message="local rate limit: no token in time")
    else:
        result = gateway().charge(
            idempotency_key=payment.idempotency_key,
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            customer=payment.customer_ref,
        )
    return _record(payment_id, attempt.pk, result)


def _payment_data(p: Payment) -> dict[str, Any]:
    return {
        "payment_id": str(p.id),
        "invoice_id": p.invoice_id,
        "amount_minor": p.amount_minor,
        "currency": p.currency,
    }


def _emit(p: Payment, event_type: str, data: dict[str, Any]) -> None:
    record_change(sender=Payment, obj=p, type=event_type, data=data)


@transaction.atomic
def _record(payment_id: str, attempt_id: int, result: ChargeResult) -> str:
    p = Payment.objects.select_for_update().get(pk=payment_id)
    now = timezone.now()
    PaymentAttempt.objects.filter(pk=attempt_id).update(
        finished_at=now,
        outcome="succeeded" if result.ok else result.error_class,
        gateway_reference=result.reference,
        http_status=result.http_status,
        error_message=result.message[:500],
    )
    if p.status == Payment.Status.SUCCEEDED:
        return "succeeded"  # a concurrent duplicate already recorded it
    attempts = p.attempts.count()
    if result.ok:
        p.status = Payment.Status.SUCCEEDED
        p.gateway_reference = result.reference
        p.next_attempt_at = None
        _emit(p, contracts.PAYMENT_SUCCEEDED, {**_payment_data(p), "gateway_reference": result.reference})
        metrics.PAYMENTS.labels("succeeded").inc()
        return "succeeded"
    p.last_error_class, p.last_error_message = result.error_class, result.message[:500]
    if result.error_class == TRANSIENT:
        p.transient_failures += 1
        delay = min(
            settings.PAYMENT_TRANSIENT_BACKOFF_MAX_SECONDS,
            settings.PAYMENT_TRANSIENT_BACKOFF_SECONDS * 2 ** (p.transient_failures - 1),
        )
        delay = delay / 2 + random.uniform(0, delay / 2)
        p.status = Payment.Status.PENDING
        if p.transient_failures > settings.PAYMENT_TRANSIENT_MAX_RETRIES:
            # The gateway has been failing for a while: leave it to the retry sweep, later.
            delay = settings.PAYMENT_TRANSIENT_BACKOFF_MAX_SECONDS
            p.status = Payment.Status.RETRY_SCHEDULED
            p.transient_failures = 0
        if p.status == Payment.Status.PENDING:  # a charge is queued to run after ``delay``
            p.next_attempt_at = _lease_end(delay)
        else:
            p.next_attempt_at = now + timedelta(seconds=delay)
        p.save()
        metrics.PAYMENTS.labels("transient").inc()
        if p.status == Payment.Status.PENDING:
            transaction.on_commit(lambda: _enqueue_charge(payment_id, delay), robust=True)
        return "transient"
    final = result.error_class == HARD or p.dunning_step >= len(settings.PAYMENT_DUNNING_DAYS)
    if result.error_class == SOFT and not final:
        p.dunning_step += 1
        p.transient_failures = 0
        p.status = Payment.Status.RETRY_SCHEDULED
        p.next_attempt_at = now + timedelta(days=settings.PAYMENT_DUNNING_DAYS[p.dunning_step - 1])
    else:
        p.status = Payment.Status.FAILED
        p.next_attempt_at = None
    _emit(
        p,
        contracts.PAYMENT_FAILED,
        {
            **_payment_data(p),
            "final": final,
            "error_class": result.error_class,
            "error_message": result.message[:1000],
            "attempts": attempts,
        },
    )
    metrics.PAYMENTS.labels("failed_final" if final else "soft_declined").inc()
    if final:
        record_event(
            sender=Payment,
            type="alert.payment_failed",
            aggregate_id=f"payment_failed:{p.id}",
            aggregate_version=p.aggregate_version,
            data={
                "check": "payment_failed",
                "severity": "warning",
                "summary": f"Payment for invoice {p.invoice_number} failed for good: {result.message[:200]}",
                "details": {
                    "payment_id": str(p.id),
                    "invoice_id": p.invoice_id,
                    "customer": p.customer_ref,
                    "amount_minor": p.amount_minor,
                    "currency": p.currency,
                    "error_class": result.error_class,
                    "attempts": attempts,
                },
            },
        )
    return "failed_final" if final else "soft_declined"


def payments_retry_due(*, limit: int = 1000) -> int:
    """Enqueue the charges whose (dunning or backoff) time has come, and rescue stuck ones.

    Each payment taken is leased (``next_attempt_at`` moves PAYMENT_CHARGE_LEASE_SECONDS on)
    in the same transaction, so a sweep never enqueues a payment whose charge is still queued:
    a backlog at the gateway's pace does not snowball into duplicate charge messages.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.PAYMENT_PROCESSING_STALE_SECONDS)
    with transaction.atomic():
        due = list(
            Payment.objects.select_for_update(skip_locked=True)
            .filter(
                status__in=[Payment.Status.PENDING, Payment.Status.RETRY_SCHEDULED], next_attempt_at__lte=now
            )
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )
        stuck = list(
            Payment.objects.select_for_update(skip_locked=True)
            .filter(status=Payment.Status.PROCESSING, updated_at__lt=stale)
            .values_list("pk", flat=True)[:limit]
        )
        Payment.objects.filter(pk__in=due).update(next_attempt_at=_lease_end())
        # its worker died mid-charge: charge again (same idempotency key, so never twice)
        Payment.objects.filter(pk__in=stuck).update(
            status=Payment.Status.PENDING, next_attempt_at=_lease_end(), updated_at=now
        )
    for pk in due + stuck:
        _enqueue_charge(str(pk))
    return len(due) + len(stuck)


@transaction.atomic
def payment_retry_now(*, payment_id: str) -> bool:
    """Operator: charge again now. A final failure gets a new attempt (a new idempotency key);
    succeeded or in-flight payments are left alone (idempotent). Returns whether enqueued."""
    p = Payment.objects.select_for_update().get(pk=payment_id)
    if p.status in (Payment.Status.SUCCEEDED, Payment.Status.PROCESSING):
        return False
    if p.status == Payment.Status.FAILED:
        p.dunning_step += 1
    p.status = Payment.Status.RETRY_SCHEDULED
    p.transient_failures = 0
    p.next_attempt_at = _lease_end()
    p.save()
    transaction.on_commit(lambda: _enqueue_charge(payment_id), robust=True)
    return True
