"""Sending payments' Celery tasks by name (queue ``payments`` through the task routes).

Services ask for work here instead of importing ``payments.tasks``, which imports the services:
the task names are the contract (STYLE: explicit dotted names), so no import cycle is needed.
Charges sent together (a dispatch pass, services/dispatching.py; the sweep) go
``PAYMENT_CHARGES_PER_TASK`` to a ``payments.charge_payments`` message, and the messages in
SendMessageBatch calls of 10 (core/task_batches.py), not one SendMessage per payment. Payments opened from
``invoice.issued`` are not sent by their consumer at all: its commit asks ``charge_kicker`` for a
dispatch pass, coalesced across processes as the relay's kicks are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from celery import current_app
from django.conf import settings

from core.task_batches import send_tasks
from events.publishing.kicker import Kicker

CHARGES = "payments.charges"  # the dispatch's kick marker (events_relaykick)

charge_kicker = Kicker(CHARGES, "payments.dispatch_charges", what="the charge dispatch")


def enqueue_charge(payment_id: str, step: int, countdown: float = 0) -> None:
    """A charge of dunning step ``step`` (the payment's ``dunning_step``): a copy of the message
    that arrives once that step is decided does nothing (services/charging.py)."""
    current_app.send_task(
        "payments.charge_payment",
        kwargs={"payment_id": payment_id, "step": step},
        countdown=max(0, int(countdown)),
    )


def enqueue_charges(charges: Sequence[tuple[str, int]]) -> None:
    """The charges, (payment id, dunning step) each, in ``payments.charge_payments`` messages of at
    most ``PAYMENT_CHARGES_PER_TASK``, sent in batches; dealt round the messages in due order, so
    every message starts with the earliest due. A worker process has a message's charges at the
    gateway several at once (services/charge_lists.py), so a few charges share one message rather
    than wait for a process each."""
    per_task = max(1, settings.PAYMENT_CHARGES_PER_TASK)
    n = math.ceil(len(charges) / per_task)
    messages = [{"charges": [[p, step] for p, step in charges[i::n]]} for i in range(n)]
    send_tasks("payments.charge_payments", messages)


def enqueue_dispatch(countdown: float) -> None:
    """A dispatch pass in ``countdown`` seconds (one stopped by PAYMENT_DISPATCH_AHEAD_SECONDS)."""
    current_app.send_task("payments.dispatch_charges", countdown=max(0, int(countdown)))


def enqueue_refund(refund_id: str, countdown: float = 0) -> None:
    current_app.send_task(
        "payments.refund_payment", kwargs={"refund_id": refund_id}, countdown=max(0, int(countdown))
    )
