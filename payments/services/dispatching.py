"""Charges sent from the database: the payments due now, leased and sent in batches.

A payment opened from ``invoice.issued`` is due at once (``next_attempt_at`` its opening); the
consumer only commits it and asks the charge kicker (payments/dispatch.py) for a dispatch pass, so
handling a batch of ``invoice.issued`` costs no call to the broker. A pass (task
``payments.dispatch_charges``, the beat sweep too) takes the due payments in batches of
``PAYMENT_DISPATCH_BATCH``, each in one transaction: ``FOR UPDATE SKIP LOCKED``, so two passes at
once never take the same payment, and leased (``next_attempt_at`` moves
PAYMENT_CHARGE_LEASE_SECONDS on) in the same transaction, so no later pass sends it again while
its charge is queued. After the commit the batch's charge tasks go out in SendMessageBatch calls;
a send that fails gives the lease back (the payments are due again) and raises.

A pass holds the kick marker while it runs and clears it only as it stops, before its last look
(as the relay does, events/publishing/kicker.py): commits meanwhile send no task, and one after
the clear kicks again. A pass out of ``PAYMENT_DISPATCH_MAX_SECONDS`` with payments still due
kicks one more pass for them. What a lost kick leaves, the beat sweep sends (services/retries.py).
"""

from __future__ import annotations

import contextlib
import time

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models.functions import Now

from events.publishing.kicker import kick_hold, kick_release

from ..dispatch import CHARGES, charge_kicker, enqueue_charges
from ..models import Payment
from .charging import lease_end

P = Payment.Status


def charges_send_due(*, limit: int) -> int:
    """Lease up to ``limit`` due payments (earliest due first) and send their charge tasks.
    Returns how many were sent."""
    lease = lease_end()
    with transaction.atomic():
        ids = list(
            Payment.objects.select_for_update(skip_locked=True)
            .filter(status__in=[P.PENDING, P.RETRY_SCHEDULED], next_attempt_at__lte=Now())
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            Payment.objects.filter(pk__in=ids).update(next_attempt_at=lease)
    if not ids:
        return 0
    try:
        enqueue_charges([str(pk) for pk in ids])
    except Exception:
        # Not sent (some maybe were): due again, for the next pass. Only the payments still on
        # this pass's lease: one whose charge went out and already ran (a soft decline scheduled
        # its next dunning step days on, a transient error its backoff) keeps its new time.
        with contextlib.suppress(DatabaseError):
            Payment.objects.filter(
                pk__in=ids, status__in=[P.PENDING, P.RETRY_SCHEDULED], next_attempt_at=lease
            ).update(next_attempt_at=Now())
        raise
    return len(ids)


def charges_dispatch(*, max_seconds: float | None = None) -> int:
    """A dispatch pass: send every due charge, batch after batch, then stop (see the module).
    Returns how many charges were sent."""
    max_seconds = settings.PAYMENT_DISPATCH_MAX_SECONDS if max_seconds is None else max_seconds
    deadline = time.monotonic() + max_seconds
    batch = settings.PAYMENT_DISPATCH_BATCH
    sent = 0
    try:
        while True:
            kick_hold(CHARGES)  # this pass looks again before it stops: kicks can wait
            step = charges_send_due(limit=batch)
            sent += step
            if step == batch and time.monotonic() <= deadline:
                continue
            kick_release(CHARGES)  # stopping: kicks from now on are about payments it will not see
            step = charges_send_due(limit=batch)
            sent += step
            if step == batch:  # out of time with more due: one more pass takes them, not the sweep
                charge_kicker.request()
            return sent
    except Exception:
        with contextlib.suppress(DatabaseError):
            kick_release(CHARGES)  # a failed pass looks for nothing more: later commits kick again
        raise
