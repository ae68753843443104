"""The invoice state machine: the allowed transitions, as data. Every service goes through it.

    open ──────────► paid            (payment.succeeded)
      │  └─────────► uncollectible ─► paid   (a late success after a final failure)
      │                    │
      └─► void ◄───────────┘         (an operator, or a correction)

Closed states never reopen: a void invoice is never paid (money taken for one anyway is
refunded by payments, which hears ``invoice.voided``), a paid one is corrected only by a
credit note.
"""

from __future__ import annotations

from .models import Invoice

S = Invoice.Status

TRANSITIONS: dict[str, frozenset[str]] = {
    S.DRAFT: frozenset({S.OPEN, S.VOID}),
    S.OPEN: frozenset({S.PAID, S.VOID, S.UNCOLLECTIBLE}),
    S.UNCOLLECTIBLE: frozenset({S.PAID, S.VOID}),
    S.PAID: frozenset(),
    S.VOID: frozenset(),
}
CLOSED = frozenset({S.PAID, S.VOID, S.UNCOLLECTIBLE})
UNPAID = frozenset({S.OPEN, S.UNCOLLECTIBLE})  # what a correction may void


class InvalidTransition(ValueError):
    """The invoice cannot go from its state to the one asked for."""


def can(current: str, target: str) -> bool:
    return target in TRANSITIONS[current]


def transition(invoice: Invoice, target: str) -> bool:
    """Move ``invoice`` to ``target`` (not saved). False if it is already there (idempotent);
    InvalidTransition if the machine does not allow it."""
    if invoice.status == target:
        return False
    if not can(invoice.status, target):
        raise InvalidTransition(f"invoice {invoice.number} is {invoice.status}; it cannot become {target}")
    invoice.status = target
    return True
