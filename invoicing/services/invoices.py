"""Invoice state, changed only through the state machine (invoicing/states.py).

Payment events arrive in any order and any number of times: each service here is idempotent,
and an outcome for an invoice not issued yet is kept and applied when it is.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from events import contracts
from events.publishing import record_change, record_changes

from .. import states
from ..models import Invoice, PendingPaymentOutcome

logger = logging.getLogger(__name__)
S = Invoice.Status


def _locked_or_kept(invoice_id: str, payment_id: str, outcome: str, detail: dict[str, Any]) -> Invoice | None:
    """The invoice, locked; or None after keeping the outcome for when it is issued."""
    invoice = Invoice.objects.select_for_update().filter(pk=invoice_id).first()
    if invoice is None:
        PendingPaymentOutcome.objects.get_or_create(
            invoice_id=invoice_id, payment_id=payment_id, outcome=outcome, defaults={"detail": detail}
        )
    return invoice


def _bump(invoice: Invoice, event_type: str, data: dict[str, Any]) -> None:
    record_change(sender=Invoice, obj=invoice, type=event_type, data=data)


Change = tuple[Invoice, str, dict[str, Any]]  # an invoice changed in memory, its event type and data
PAID_FIELDS = ("status", "paid_at", "payment_id")  # what _paid sets


@transaction.atomic
def invoice_mark_paid(
    *, invoice_id: str, payment_id: str, paid_at: str | datetime | None = None
) -> Invoice | None:
    """A payment succeeded: an open (or uncollectible) invoice is paid. Idempotent.

    A void invoice stays void: the charge happened after the void (or raced it), and payments,
    which hears ``invoice.voided`` too, refunds it and raises an alert.
    """
    invoice = _locked_or_kept(invoice_id, payment_id, "paid", {"paid_at": str(paid_at) if paid_at else None})
    if invoice is not None and (change := _paid(invoice, payment_id)):
        _bump(*change)
    return invoice


@transaction.atomic(savepoint=False)
def invoices_mark_paid(*, paid: list[tuple[str, str]]) -> None:
    """``invoice_mark_paid`` for each (invoice_id, payment_id) of a consumer's receive batch, in
    the caller's transaction: the invoices are locked by one statement, in the order a correction
    locks an agreement's invoices (corrections.py), so two batches never wait on each other in a
    cycle. A batch that also holds agreement events, or meets a correction working through several
    agreements, can deadlock with it: PostgreSQL ends one of the two after a second, and a
    consumer's batch is then handled one message at a time (events/consuming/batch.py).

    The invoices paid are written by one statement and their ``invoice.paid`` events by one
    insert (``record_changes``), not a save and an insert each. An invoice named twice is paid by
    the first: every later mention meets the same object, already paid."""
    keys = [key for key in {_invoice_key(invoice_id) for invoice_id, _ in paid} if isinstance(key, uuid.UUID)]
    invoices = {invoice.pk: invoice for invoice in _lock_invoices(keys)}
    changes: list[Change] = []
    for invoice_id, payment_id in paid:
        invoice = invoices.get(_invoice_key(invoice_id))
        if invoice is None:  # not issued yet: kept for when it is (or issued since the read above)
            invoice = _locked_or_kept(invoice_id, payment_id, "paid", {"paid_at": None})
            if invoice is None:
                continue
            invoices[invoice.pk] = invoice
        if change := _paid(invoice, payment_id):
            changes.append(change)
    record_changes(sender=Invoice, changes=changes, fields=PAID_FIELDS)


def _lock_invoices(ids: list[uuid.UUID]) -> list[Invoice]:
    """These invoices, locked by one statement in the corrections' order. Written out rather than
    as a queryset: compiling that queryset was a tenth of the CPU of a batch of ``payment.succeeded``."""
    if not ids:
        return []
    return list(
        Invoice.objects.raw(
            f'SELECT * FROM "{Invoice._meta.db_table}" WHERE id = ANY(%s::uuid[]) '  # noqa: S608 - our table
            "ORDER BY issued_at, sequence, id FOR UPDATE",
            [ids],
        )
    )


def _invoice_key(invoice_id: str) -> uuid.UUID | str:
    """An invoice id as its primary key compares (one invoice however its UUID is spelt)."""
    try:
        return uuid.UUID(invoice_id)
    except ValueError:
        return invoice_id


def _paid(invoice: Invoice, payment_id: str) -> Change | None:
    """Mark ``invoice`` paid in memory (PAID_FIELDS) and return the change to record; None when it
    cannot be paid (already paid, or void)."""
    if not states.can(invoice.status, S.PAID):
        if invoice.status == S.VOID:
            logger.warning(
                "invoice %s is void but payment %s succeeded: payments refunds it", invoice.number, payment_id
            )
        return None
    when = timezone.now()
    states.transition(invoice, S.PAID)
    invoice.paid_at = when
    invoice.payment_id = payment_id
    data = {"invoice_id": str(invoice.id), "payment_id": payment_id, "paid_at": when.isoformat()}
    return invoice, contracts.INVOICE_PAID, data


@transaction.atomic
def invoice_mark_uncollectible(*, invoice_id: str, payment_id: str, reason: str) -> Invoice | None:
    """Collection failed for good: open -> uncollectible. Paid and void stay. Idempotent."""
    invoice = _locked_or_kept(invoice_id, payment_id, "uncollectible", {"reason": reason})
    if invoice is None:
        return None
    if not states.can(invoice.status, S.UNCOLLECTIBLE):
        return invoice
    states.transition(invoice, S.UNCOLLECTIBLE)
    invoice.closed_reason = reason[:500]
    invoice.payment_id = payment_id
    _bump(
        invoice,
        contracts.INVOICE_MARKED_UNCOLLECTIBLE,
        {"invoice_id": str(invoice.id), "payment_id": payment_id, "reason": reason[:500]},
    )
    return invoice


@transaction.atomic
def invoice_void(*, invoice_id: str, reason: str, by: str = "operator") -> Invoice:
    """Void an unpaid invoice (issued in error, or corrected). Idempotent for void invoices.

    Records ``invoice.voided``: payments stops collecting it (pending and scheduled charges are
    cancelled; a charge already in flight that succeeds is refunded). A paid invoice cannot be
    voided: it gets a credit note instead. An operator's void (``by="operator"``) waives the
    period: corrections never bill it again.
    """
    invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
    if invoice.status == S.VOID:
        return invoice
    if not states.can(invoice.status, S.VOID):
        raise ValidationError(
            f"{invoice.number} is {invoice.status}: only open or uncollectible invoices can be voided"
            + ("; a paid invoice is corrected with a credit note" if invoice.status == S.PAID else "")
        )
    states.transition(invoice, S.VOID)
    invoice.closed_reason = reason[:500]
    invoice.voided_by = by
    _bump(invoice, contracts.INVOICE_VOIDED, {"invoice_id": str(invoice.id), "reason": reason[:500]})
    return invoice


def apply_pending_outcomes(invoice_ids: list[str]) -> None:
    """Payment outcomes that arrived before their invoices: apply them now (same transaction)."""
    pending = list(PendingPaymentOutcome.objects.filter(invoice_id__in=invoice_ids))
    for outcome in pending:
        if outcome.outcome == "paid":
            invoice_mark_paid(
                invoice_id=outcome.invoice_id,
                payment_id=outcome.payment_id,
                paid_at=outcome.detail.get("paid_at"),
            )
        else:
            invoice_mark_uncollectible(
                invoice_id=outcome.invoice_id,
                payment_id=outcome.payment_id,
                reason=outcome.detail.get("reason", ""),
            )
        outcome.delete()
