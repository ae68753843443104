"""Invoicing closed or corrected an invoice: stop collecting it, or give money back.

Both handlers are idempotent and order-insensitive: a void that arrives before the invoice's
``invoice.issued`` is remembered (``ClosedInvoice``) and its payment starts cancelled; a credit
note whose charge has not succeeded here yet waits for it.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import states
from ..dispatch import enqueue_charge
from ..models import ClosedInvoice, Payment
from .charging import cancel, lease_end, outcome_unknown
from .opening import lock_invoices
from .refunds import refund_for_closed_invoice, refund_request

P = Payment.Status


@transaction.atomic
def payment_close_for_invoice(*, invoice_id: str, reason: str) -> Payment | None:
    """The invoice was voided: nothing more is collected. Pending and scheduled charges are
    cancelled; money already taken is refunded (with an alert); a charge in flight is settled
    when its answer comes (refunded if it succeeded)."""
    lock_invoices([invoice_id])
    p = Payment.objects.select_for_update().filter(invoice_id=invoice_id).first()
    if p is None:
        ClosedInvoice.objects.get_or_create(invoice_id=invoice_id, defaults={"reason": reason[:500]})
        return None
    if p.invoice_closed_at is None:
        p.invoice_closed_at, p.invoice_closed_reason = timezone.now(), reason[:500]
        p.save(update_fields=["invoice_closed_at", "invoice_closed_reason", "updated_at"])
    if p.status in (P.PENDING, P.RETRY_SCHEDULED):
        if outcome_unknown(p):
            # its last try's answer was lost: ask the gateway once more with the same key
            states.transition(p, P.PENDING)
            p.next_attempt_at = lease_end()
            p.save(update_fields=["status", "next_attempt_at", "updated_at"])
            payment_id, step = str(p.id), p.dunning_step
            transaction.on_commit(lambda: enqueue_charge(payment_id, step), robust=True)
        else:
            cancel(p, f"invoice voided: {reason}")
    elif p.status == P.SUCCEEDED:
        refund_for_closed_invoice(p)
    return p


@transaction.atomic
def refund_for_credit_note(*, data: dict[str, Any]) -> None:
    """A credit note on a paid invoice: refund its amount on the invoice's charge (once)."""
    lock_invoices([data["invoice_id"]])
    p = Payment.objects.select_for_update().filter(invoice_id=data["invoice_id"]).first()
    refund_request(
        key=f"credit_note:{data['credit_note_id']}",
        invoice_id=data["invoice_id"],
        payment=p,
        amount_minor=data["total_minor"],
        currency=data["currency"],
        reason=f"credit note {data['number']}: {data['reason']}",
    )
