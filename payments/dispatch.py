"""Sending payments' Celery tasks by name (queue ``payments`` through the task routes).

Services ask for work here instead of importing ``payments.tasks``, which imports the services:
the task names are the contract (STYLE: explicit dotted names), so no import cycle is needed.
Charges decided together (a receive batch of ``invoice.issued``) are sent together: one
SendMessageBatch per 10 charges (core/task_batches.py), not one SendMessage per payment.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import current_app

from core.task_batches import send_tasks


def enqueue_charge(payment_id: str, countdown: float = 0) -> None:
    current_app.send_task(
        "payments.charge_payment", kwargs={"payment_id": payment_id}, countdown=max(0, int(countdown))
    )


def enqueue_charges(payment_ids: Sequence[str]) -> None:
    """One ``payments.charge_payment`` message per payment, sent in batches."""
    send_tasks("payments.charge_payment", [{"payment_id": p} for p in payment_ids])


def enqueue_refund(refund_id: str, countdown: float = 0) -> None:
    current_app.send_task(
        "payments.refund_payment", kwargs={"refund_id": refund_id}, countdown=max(0, int(countdown))
    )
