"""invoicing's event handlers (consumer "invoicing", queue {prefix}invoicing-events)."""

from __future__ import annotations

import uuid

from events import contracts
from events.consuming import Event, Poison, handles, handles_batch

from .services import invoice_mark_uncollectible, invoices_mark_paid, projection_apply_batch


@handles_batch(
    contracts.AGREEMENT_CREATED,
    contracts.AGREEMENT_PRICE_CHANGED,
    contracts.AGREEMENT_PAUSED,
    contracts.AGREEMENT_RESUMED,
    contracts.AGREEMENT_CANCELLED,
)
def agreement_project(events: list[Event]) -> None:
    """Fold the events (of one receive batch, or one) into the billable-agreement projection.

    Order-insensitive: contributions are kept per aggregate_version, so older
    versions never overwrite newer ones and a cancel before its create is kept.
    The same effects as folding them one at a time, each in its own transaction.
    """
    projection_apply_batch(events=events)


@handles_batch(contracts.PAYMENT_SUCCEEDED)
def invoice_paid_on_payment(events: list[Event]) -> None:
    """Mark the invoices paid (those of one receive batch at once: one transaction, not one per
    charge). Order-insensitive: paid wins over an earlier or later final failure; a payment for
    an invoice not known yet is kept and applied when it is issued."""
    invoices_mark_paid(paid=[(_our_invoice_id(e), e.data["payment_id"]) for e in events])


@handles(contracts.PAYMENT_FAILED)
def invoice_uncollectible_on_final_failure(event: Event) -> None:
    """A final payment failure marks an open invoice uncollectible; non-final failures change nothing."""
    if event.data["final"]:
        invoice_mark_uncollectible(
            invoice_id=_our_invoice_id(event),
            payment_id=event.data["payment_id"],
            reason=f"{event.data['error_class']}: {event.data['error_message']}",
        )


def _our_invoice_id(event: Event) -> str:
    """The invoice a payment event names. invoicing's invoice ids are UUIDs; the contract takes
    any id, and one that is not a UUID names no invoice of ours, now or ever: poison (the DLQ,
    with this reason), not an outcome kept for an invoice that will never be issued, nor a
    failure retried until SQS gives up."""
    invoice_id = event.data["invoice_id"]
    try:
        uuid.UUID(invoice_id)
    except ValueError:
        raise Poison(
            f"payment {event.data['payment_id']} names invoice_id {invoice_id!r}, which is not an "
            "invoice of invoicing (its ids are UUIDs)"
        ) from None
    return invoice_id
