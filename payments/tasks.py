"""Celery entry points of payments (queue "payments"). Thin: call a service."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from core.task_options import IDEMPOTENT_DB_TASK

from .services import charges_dispatch, payment_charge, payment_refund, payments_retry_due, refunds_retry_due


@shared_task(name="payments.charge_payment", **IDEMPOTENT_DB_TASK)
def charge_payment(self: Any, payment_id: str, step: int | None = None) -> str:
    """Charge one payment at the global rate limit, for dunning step ``step`` (a message sent
    before steps were named has none). Idempotent (same key per dunning step); gateway errors are
    handled by the service (backoff, dunning), not by retrying this task."""
    return payment_charge(payment_id=payment_id, step=step)


@shared_task(name="payments.dispatch_charges", bind=True, ignore_result=True, acks_late=True)
def dispatch_charges(self: Any) -> int:
    """Kicked after payments open: send every due charge in batches (services/dispatching.py)."""
    return charges_dispatch()


@shared_task(name="payments.refund_payment", **IDEMPOTENT_DB_TASK)
def refund_payment(self: Any, refund_id: str) -> str:
    """Send one refund to the gateway. Idempotent (its key is the refund's id)."""
    return payment_refund(refund_id=refund_id)


@shared_task(name="payments.retry_due", bind=True, ignore_result=True, acks_late=True)
def retry_due(self: Any) -> int:
    """Beat: enqueue charges and refunds whose time has come; rescue stuck ones."""
    return payments_retry_due() + refunds_retry_due()
