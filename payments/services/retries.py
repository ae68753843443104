"""Charges taken up again: the beat sweep (due dunning steps and backoffs, charges a lost kick
left, rescues of charges whose message was lost or whose worker died) and an operator's "retry
now"."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .. import states
from ..dispatch import enqueue_charge, enqueue_charges
from ..models import Payment
from .charging import lease_end
from .dispatching import charges_send_batch

P = Payment.Status


def payments_retry_due(*, limit: int = 1000) -> int:
    """Send the charges whose time has come, and rescue stuck ones. Returns how many were sent.

    What is due is sent as a dispatch pass sends it (services/dispatching.py): leased in the
    transaction that takes it, so a sweep never sends a payment whose charge is still queued, and
    within the bound on the queue ahead of the gateway, so a backlog at the gateway's pace does not
    snowball into duplicate charge messages.
    """
    sent, _more = charges_send_batch(limit=limit)
    stale = timezone.now() - timedelta(seconds=settings.PAYMENT_PROCESSING_STALE_SECONDS)
    with transaction.atomic():
        stuck = list(
            Payment.objects.select_for_update(skip_locked=True)
            .filter(status=P.PROCESSING, updated_at__lt=stale)
            .values_list("pk", "dunning_step")[:limit]
        )
        # its worker died mid-charge: charge again (same idempotency key, so never twice)
        Payment.objects.filter(pk__in=[pk for pk, _step in stuck]).update(
            status=P.PENDING, next_attempt_at=lease_end(), updated_at=timezone.now()
        )
    if stuck:
        enqueue_charges([(str(pk), step) for pk, step in stuck])
    return sent + len(stuck)


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
    step = p.dunning_step
    transaction.on_commit(lambda: enqueue_charge(payment_id, step), robust=True)
    return True
