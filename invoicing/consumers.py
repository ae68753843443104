"""invoicing's event handlers (consumer "invoicing", queue {prefix}invoicing-events)."""

from __future__ import annotations

from events import contracts
from events.consuming import Event, handles, handles_batch

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
    invoices_mark_paid(paid=[(e.data["invoice_id"], e.data["payment_id"]) for e in events])


@handles(contracts.PAYMENT_FAILED)
def invoice_uncollectible_on_final_failure(event: Event) -> None:
    """A final payment failure marks an open invoice uncollectible; non-final failures change nothing."""
    if event.data["final"]:
        invoice_mark_uncollectible(
            invoice_id=event.data["invoice_id"],
            payment_id=event.data["payment_id"],
            reason=f"{event.data['error_class']}: {event.data['error_message']}",
        )
