"""payments' periodic tasks: charges and refunds whose time has come."""

from __future__ import annotations

from django.conf import settings

from core.schedules import Periodic


def periodic_tasks() -> list[Periodic]:
    return [
        Periodic(
            name="Payments: retries due",
            task="payments.retry_due",
            every_seconds=settings.PAYMENT_RETRY_SWEEP_SECONDS,
            description="Charges and refunds whose dunning or backoff time has come; rescues stuck ones.",
        ),
    ]
