"""Celery entry points of payments (queue "payments"). Thin: call a service (``charge_payments``
decides, per wave of its list, whether to go on, send the rest on, or retry: retries are the
task's)."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.conf import settings

from core.task_options import IDEMPOTENT_DB_TASK, backoff_seconds

from .services import (
    charges_dispatch,
    charges_run,
    charges_send_on,
    payment_charge,
    payment_refund,
    payments_retry_due,
    refunds_retry_due,
)

logger = logging.getLogger(__name__)


@shared_task(name="payments.charge_payment", **IDEMPOTENT_DB_TASK)
def charge_payment(self: Any, payment_id: str, step: int | None = None) -> str:
    """Charge one payment at the global rate limit, for dunning step ``step`` (a message sent
    before steps were named has none). Idempotent (same key per dunning step); gateway errors are
    handled by the service (backoff, dunning), not by retrying this task."""
    return payment_charge(payment_id=payment_id, step=step)


@shared_task(name="payments.charge_payments", **IDEMPOTENT_DB_TASK)
def charge_payments(self: Any, charges: list[list[Any]]) -> dict[str, int]:
    """Charge each [payment id, dunning step] as ``charge_payment`` charges one, up to
    ``PAYMENT_CHARGE_CONCURRENCY`` at the gateway at once (services/charge_lists.py); the outcomes
    counted. Past ``PAYMENT_CHARGES_TASK_SECONDS`` the charges not started go on in new messages.
    A claim's database error retries only the charges claimed with it, one at a time: the ones
    after them are sent on at once, so a payment that keeps failing never holds the others back."""
    run = charges_run(
        [(p, s) for p, s in charges],
        seconds=settings.PAYMENT_CHARGES_TASK_SECONDS,
        one_at_a_time=self.request.retries > 0,
    )
    outcomes = dict(run.outcomes)
    try:
        if run.not_started:
            charges_send_on(run.not_started)
            outcomes["sent_on"] = len(run.not_started)  # returned only when nothing failed
    finally:  # a failed send on (raised) does not cost the failed charges their retry
        if run.failed:
            if run.crashed is not None:
                logger.error("a charge of the list failed", exc_info=run.crashed)
            retry_in = backoff_seconds(self.request.retries)
            kwargs = {"charges": [[p, s] for p, s in run.failed]}
            raise self.retry(kwargs=kwargs, exc=run.error, countdown=retry_in) from run.error
    if run.crashed is not None:
        raise run.crashed
    return outcomes


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
