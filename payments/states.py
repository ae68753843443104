"""The payment and refund state machines: the allowed transitions, as data. Every service goes
through ``transition``.

Payment::

    pending ──► processing ──► succeeded ──► refunded       (full refund: its invoice was closed)
      ▲  │          │  │
      │  │          │  └──► retry_scheduled ──► processing  (soft decline: dunning; long backoff)
      │  │          └─────► failed ──► retry_scheduled      (operator: "retry now")
      │  └────────────────► cancelled                      (invoice voided before the money was taken)
      └── (transient error, stale "processing" rescued)

A cancelled or refunded payment is never charged again.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import Payment, Refund

P = Payment.Status
R = Refund.Status

PAYMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    P.PENDING: frozenset({P.PROCESSING, P.RETRY_SCHEDULED, P.CANCELLED}),
    P.PROCESSING: frozenset({P.SUCCEEDED, P.PENDING, P.RETRY_SCHEDULED, P.FAILED, P.CANCELLED}),
    P.RETRY_SCHEDULED: frozenset({P.PROCESSING, P.PENDING, P.CANCELLED}),
    P.FAILED: frozenset({P.RETRY_SCHEDULED, P.CANCELLED}),
    P.SUCCEEDED: frozenset({P.REFUNDED}),
    P.CANCELLED: frozenset(),
    P.REFUNDED: frozenset(),
}
CHARGEABLE = frozenset({P.PENDING, P.RETRY_SCHEDULED, P.PROCESSING})  # a charge task may take these

REFUND_TRANSITIONS: dict[str, frozenset[str]] = {
    R.PENDING: frozenset({R.PROCESSING, R.FAILED}),
    R.PROCESSING: frozenset({R.SUCCEEDED, R.PENDING, R.FAILED}),
    R.SUCCEEDED: frozenset(),
    R.FAILED: frozenset({R.PENDING}),  # an operator retries it
}


def taken_by_another_worker(obj: Payment | Refund) -> bool:
    """A "processing" payment or refund whose worker is still within PAYMENT_PROCESSING_STALE_SECONDS:
    a second worker must leave it alone (a stale one may be taken over, with the same key)."""
    stale = timezone.now() - timedelta(seconds=settings.PAYMENT_PROCESSING_STALE_SECONDS)
    return obj.status == "processing" and obj.updated_at > stale


class InvalidTransition(ValueError):
    """The payment (or refund) cannot go from its state to the one asked for."""


def can(obj: Payment | Refund, target: str) -> bool:
    table = PAYMENT_TRANSITIONS if isinstance(obj, Payment) else REFUND_TRANSITIONS
    return target in table[obj.status]


def transition(obj: Payment | Refund, target: str) -> bool:
    """Move ``obj`` to ``target`` (not saved). False if it is there already; InvalidTransition if
    the machine does not allow it."""
    if obj.status == target:
        return False
    if not can(obj, target):
        raise InvalidTransition(f"{obj} is {obj.status}; it cannot become {target}")
    obj.status = target
    return True
