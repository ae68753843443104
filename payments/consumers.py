"""payments' event handlers (consumer "payments", queue {prefix}payments-events)."""

from __future__ import annotations

from events import contracts
from events.consuming import Event, handles, handles_batch

from .services import payment_close_for_invoice, payments_create_for_invoices, refund_for_credit_note


@handles_batch(contracts.INVOICE_ISSUED)
def payment_create_on_invoice_issued(events: list[Event]) -> None:
    """One payment per invoice (unique invoice id), charged after commit (the charges of a batch
    sent together). Duplicates change nothing; an invoice already voided here gets a cancelled
    payment."""
    payments_create_for_invoices(invoices=[e.data for e in events])


@handles(contracts.INVOICE_VOIDED)
def payment_stop_on_invoice_voided(event: Event) -> None:
    """Stop collecting a voided invoice; refund money taken for it. Idempotent, any order."""
    payment_close_for_invoice(invoice_id=event.data["invoice_id"], reason=event.data["reason"])


@handles(contracts.CREDIT_NOTE_ISSUED)
def payment_refund_on_credit_note(event: Event) -> None:
    """Refund a credit note's amount on its invoice's charge, once (keyed by the credit note)."""
    refund_for_credit_note(data=event.data)
