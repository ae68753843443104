"""payments' event handlers (consumer "payments", queue {prefix}payments-events)."""

from __future__ import annotations

from events import contracts
from events.consumers import Event, handles

from .services import payment_create_for_invoice


@handles(contracts.INVOICE_ISSUED)
def payment_create_on_invoice_issued(event: Event) -> None:
    """One payment per invoice (unique invoice id), charged after commit. Order-insensitive:
    invoice.issued is the only invoice event this consumer needs; duplicates change nothing."""
    payment_create_for_invoice(data=event.data)
