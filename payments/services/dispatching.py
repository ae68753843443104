"""Charges sent from the database: the payments due now, leased and sent in batches, at most
``PAYMENT_DISPATCH_AHEAD_SECONDS`` of the gateway's rate queued ahead of it.

A payment opened from ``invoice.issued`` is due at once (``next_attempt_at`` its opening); the
consumer only commits it and asks the charge kicker (payments/dispatch.py) for a dispatch pass, so
handling a batch of ``invoice.issued`` costs no call to the broker. A pass (task
``payments.dispatch_charges``, on the ``default`` queue so it never waits behind the charges it
sent; the beat sweep too) takes the due payments in batches of ``PAYMENT_DISPATCH_BATCH``, each in
one transaction: ``FOR UPDATE SKIP LOCKED``, so two passes at once never take the same payment,
and leased (``next_attempt_at`` moves PAYMENT_CHARGE_LEASE_SECONDS on; a dunning retry is
``pending`` again, queued) in the same transaction, so no later pass sends it again while its
charge is queued. After the commit the batch's charge tasks go out in SendMessageBatch calls; a
send that fails gives the lease back (the payments are due again) and raises.

The queue ahead of the gateway is bounded: charges queued (pending and leased) or at the gateway
(processing) are counted, and a pass sends no more than ``PAYMENT_DISPATCH_AHEAD_SECONDS`` times
``PAYMENT_RATE_LIMIT_PER_SECOND`` of them. A daily run of 100,000 invoices thus never queues more
than the workers take before a lease runs out (at 100/s, 1,000 s of charges against a 900 s lease
would have had the sweep send thousands again), and the queue stays shallow. A pass stopped by the
bound sends a follow-up pass due in half that time and holds the kick marker until then.

A pass holds the kick marker while it runs and clears it only as it stops, before its last look
(as the relay does, events/publishing/kicker.py): commits meanwhile send no task, and one after
the clear kicks again. A pass out of ``PAYMENT_DISPATCH_MAX_SECONDS`` with payments still due
kicks one more pass for them. What a lost kick leaves, the beat sweep sends (services/retries.py).
"""

from __future__ import annotations

import contextlib
import math
import time
from enum import Enum

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from events.operations.counts import bounded_count
from events.publishing.kicker import kick_defer, kick_hold, kick_release, kick_released_on_error

from ..dispatch import CHARGES, charge_kicker, enqueue_charges, enqueue_dispatch
from ..models import Payment
from .charging import lease_end

P = Payment.Status


class More(Enum):
    """Why a batch says more may be due: it was full, or the queue ahead reached its bound."""

    BATCH = "batch"
    BOUND = "bound"


def charges_due() -> QuerySet[Payment]:
    """The payments whose charge is due and not sent (by the database's clock, which every
    ``next_attempt_at`` a pass or the sweep compares is set against)."""
    return Payment.objects.filter(status__in=[P.PENDING, P.RETRY_SCHEDULED], next_attempt_at__lte=Now())


def charges_bound() -> int | None:
    """At most this many charges queued ahead of the gateway (``PAYMENT_DISPATCH_AHEAD_SECONDS``
    of ``PAYMENT_RATE_LIMIT_PER_SECOND``); None: no bound."""
    rate, ahead = settings.PAYMENT_RATE_LIMIT_PER_SECOND, settings.PAYMENT_DISPATCH_AHEAD_SECONDS
    if rate <= 0 or ahead <= 0:
        return None
    return max(1, int(rate * ahead))


def charges_room() -> int | None:
    """How many more charges may be queued now (the bound, less those queued or at the gateway);
    None: no bound."""
    bound = charges_bound()
    if bound is None:
        return None
    queued, _ = bounded_count(Payment.objects.filter(status=P.PENDING, next_attempt_at__gt=Now()), bound)
    at_gateway, _ = bounded_count(Payment.objects.filter(status=P.PROCESSING), bound)
    return max(0, bound - queued - at_gateway)


def charges_send_due(*, limit: int) -> int:
    """Lease up to ``limit`` due payments (earliest due first) and send their charge tasks, each
    for the payment's dunning step. Returns how many were sent. The bound on the queue ahead is
    the caller's (``charges_room``)."""
    if limit <= 0:
        return 0
    lease = lease_end()
    with transaction.atomic():
        due = list(
            charges_due()
            .select_for_update(skip_locked=True)
            .order_by("next_attempt_at")
            .values_list("pk", "dunning_step")[:limit]
        )
        ids = [pk for pk, _step in due]
        if ids:
            # pending while queued, a dunning retry too: the bound counts the queued charges by
            # that (charges_room), and a retry left "retry_scheduled" escaped it, every pass and
            # sweep sending as many again while the retries sent before were still queued
            Payment.objects.filter(pk__in=ids).update(
                status=P.PENDING, next_attempt_at=lease, updated_at=timezone.now()
            )
    if not ids:
        return 0
    try:
        enqueue_charges([(str(pk), step) for pk, step in due])
    except Exception:
        # Not sent (some maybe were): due again, for the next pass. Only the payments still on
        # this pass's lease: one whose charge went out and already ran (a soft decline scheduled
        # its next dunning step days on, a transient error its backoff) keeps its new time, and
        # the copy of its message the next pass sends is for a decided step: skipped.
        with contextlib.suppress(DatabaseError):
            Payment.objects.filter(
                pk__in=ids, status__in=[P.PENDING, P.RETRY_SCHEDULED], next_attempt_at=lease
            ).update(next_attempt_at=Now())
        raise
    return len(ids)


def charges_send_on(charges: list[tuple[str, int]]) -> None:
    """Charges leased to a task that did not start them (out of time, or the database failed under
    one before them): in new messages. If those cannot be sent, the charges are due again at once,
    for the next pass or sweep, instead of at the end of their lease; then the error is raised.
    Only the ones still waiting on a lease (pending, due later) are given back: one a copy of the
    message has charged meanwhile keeps what its charge decided."""
    try:
        enqueue_charges(charges)
    except Exception:
        # best effort: when the database is what failed, the lease still brings them back
        with contextlib.suppress(DatabaseError):
            Payment.objects.filter(
                pk__in=[p for p, _step in charges], status=P.PENDING, next_attempt_at__gt=Now()
            ).update(next_attempt_at=Now())
        raise


def charges_send_batch(*, limit: int) -> tuple[int, More | None]:
    """One batch of at most ``limit`` within the bound: (sent, why more may be due, or None)."""
    room = charges_room()
    if room is not None and room < limit:
        sent = charges_send_due(limit=room)
        if sent == room and charges_due().exists():
            return sent, More.BOUND
        return sent, None
    sent = charges_send_due(limit=limit)
    return sent, More.BATCH if sent == limit else None


def charges_dispatch(*, max_seconds: float | None = None) -> int:
    """A dispatch pass: send the due charges, batch after batch, within the bound, then stop (see
    the module). Returns how many charges were sent."""
    max_seconds = settings.PAYMENT_DISPATCH_MAX_SECONDS if max_seconds is None else max_seconds
    deadline = time.monotonic() + max_seconds
    batch = settings.PAYMENT_DISPATCH_BATCH
    sent = 0
    with kick_released_on_error(CHARGES):
        while True:
            kick_hold(CHARGES)  # this pass looks again before it stops: kicks can wait
            step, more = charges_send_batch(limit=batch)
            sent += step
            if more is More.BOUND:
                _follow_up()
                return sent
            if more is More.BATCH and time.monotonic() <= deadline:
                continue
            kick_release(CHARGES)  # stopping: kicks from now on are about payments it will not see
            step, more = charges_send_batch(limit=batch)
            sent += step
            if more is More.BOUND:
                _follow_up()
            elif more is More.BATCH:  # out of time with more due: one more pass, not the sweep
                charge_kicker.request()
            return sent


def _follow_up() -> None:
    """The queue ahead is full: a pass in half the bound's time sends more as it drains. Kicks wait
    for it (the marker is held until it is due), since it takes every payment due by then."""
    # whole seconds (a countdown is), at least one: a bound under 2 s made it 0, a follow-up due at
    # once that met the same full queue and sent another, a loop for as long as the queue stayed full
    delay = max(1, math.ceil(settings.PAYMENT_DISPATCH_AHEAD_SECONDS / 2))
    kick_defer(CHARGES, delay)
    enqueue_dispatch(countdown=delay)
