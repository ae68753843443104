"""Sending payments' Celery tasks by name (queue ``payments`` through the task routes).

Services ask for work here instead of importing ``payments.tasks``, which imports the services:
the task names are the contract (STYLE: explicit dotted names), so no import cycle is needed.
"""

from __future__ import annotations

from celery import current_app


def enqueue_charge(payment_id: str, countdown: float = 0) -> None:
    current_app.send_task(
        "payments.charge_payment", kwargs={"payment_id": payment_id}, countdown=max(0, int(countdown))
    )


def enqueue_refund(refund_id: str, countdown: float = 0) -> None:
    current_app.send_task(
        "payments.refund_payment", kwargs={"refund_id": refund_id}, countdown=max(0, int(countdown))
    )
