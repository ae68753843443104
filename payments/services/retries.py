"""Charges taken up again: the beat sweep (due dunning steps and backoffs, rescues of charges whose
message was lost or whose worker died) and an operator's "retry now"."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .. import states
from ..dispatch import enqueue_charge
from ..models import Payment
from .charging import lease_end

P = Payment.Status


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
            .filter(status__in=[P.PENDING, P.RETRY_SCHEDULED], next_attempt_at__lte=now)
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )
        stuck = list(
            Payment.objects.select_for_update(skip_locked=True)
            .filter(status=P.PROCESSING, updated_at__lt=stale)
            .values_list("pk", flat=True)[:limit]
        )
        Payment.objects.filter(pk__in=due).update(next_attempt_at=lease_end())
        # its worker died mid-charge: charge again (same idempotency key, so never twice)
        Payment.objects.filter(pk__in=stuck).update(
            status=P.PENDING, next_attempt_at=lease_end(), updated_at=now
        )
    for pk in due + stuck:
        enqueue_charge(str(pk))
    return len(due) + len(stuck)


@transaction.atomic
def payment_retry_now(*, payment_id: str) -> bool:
    """Operator: charge again now. A final failure gets a new attempt (a new idempotency key);
    succeeded or in-flight payments are left alone (idempotent). Returns whether enqueued.

    Raises ValidationError for a payment whose invoice is closed: there is nothing to collect.
    """
    p = Payment.objects.select_for_update().get(pk=payment_id)
    if p.invoice_closed_at is not None or p.status in (P.CANCELLED, P.REFUNDED):
        raise ValidationError(
            f"{p.invoice_number}: the invoice is closed ({p.invoice_closed_reason or p.status}); "
            "nothing to collect"
        )
    if p.status in (P.SUCCEEDED, P.PROCESSING):
        return False
    if p.status == P.FAILED:
        p.dunning_step += 1
    states.transition(p, P.RETRY_SCHEDULED)
    p.transient_failures = 0
    p.next_attempt_at = lease_end()
    p.save()
    transaction.on_commit(lambda: enqueue_charge(payment_id), robust=True)
    return True
