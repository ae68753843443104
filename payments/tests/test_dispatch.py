"""Charges sent from the database: the consumer opens payments and sends nothing; a kicked
dispatch pass leases the due ones and sends their charges in batches (services/dispatching.py)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from events.models import RelayKick
from events.publishing.kicker import kick_claim
from payments.dispatch import CHARGES, charge_kicker
from payments.models import Payment
from payments.services import (
    charges_dispatch,
    dispatching,
    payment_charge,
    payments_create_for_invoices,
    payments_retry_due,
)
from tests.factories import charges_in, invoice_data, payments_create, tasks_queued_on
from tests.factories import gateway_stats as stats
from tests.helpers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

TASK_QUEUE = "billing-test-celery-payments"  # where payments.* tasks are routed
DISPATCH_QUEUE = "billing-test-celery-default"  # the dispatch pass: never behind the charges


def queued(sqs, queue: str = TASK_QUEUE) -> list[tuple[str, dict, dict]]:
    """The tasks waiting on ``queue`` (taken off it): (name, kwargs, headers) each."""
    return tasks_queued_on(sqs, queue)


def tasks_queued(sqs, queue: str = TASK_QUEUE) -> Counter[str]:
    """The tasks waiting on ``queue``, by name (taken off it)."""
    return Counter(name for name, _kwargs, _headers in queued(sqs, queue))


def charges_queued(sqs) -> Counter[str]:
    """The charges waiting, by payment (taken off the queue)."""
    return Counter(p for p, _step in charges_in(queued(sqs)))


def marker_held() -> bool:
    return RelayKick.objects.filter(name=CHARGES, sent_at__isnull=False).exists()


def invoices(prefix: str, n: int) -> list[dict]:
    return [invoice_data(f"cus-{prefix}-{i}") for i in range(n)]


def test_a_consumer_batch_sends_one_dispatch_task_and_the_pass_sends_every_charge_once(sqs, empty_queues):
    # given a receive batch of 25 invoice.issued handled (no worker: what is sent stays queued)
    before = charge_kicker.sent
    payments_create_for_invoices(invoices=invoices("batch", 25))
    wait_until(lambda: charge_kicker.sent == before + 1, timeout=10)
    # then the consumer sent no charge, only one dispatch task (not behind the charges)
    assert tasks_queued(sqs) == {}
    assert tasks_queued(sqs, DISPATCH_QUEUE) == {"payments.dispatch_charges": 1}
    assert marker_held()  # other processes' commits send nothing while that task waits
    # when the dispatch pass runs
    assert charges_dispatch() == 25
    # then every charge is queued once, for the first dunning step, the marker is cleared and
    # nothing is due any more
    tasks = queued(sqs)
    charges = charges_in(tasks)
    assert len(charges) == 25 and len(set(charges)) == 25
    assert {step for _p, step in charges} == {0}
    # ten to a message at most, in as few messages as that allows (a worker process has a
    # message's charges at the gateway several at once)
    assert sorted((len(kw["charges"]) for _name, kw, _h in tasks), reverse=True) == [9, 8, 8]
    assert not marker_held()
    assert charges_dispatch() == 0
    assert not Payment.objects.filter(next_attempt_at__lte=timezone.now()).exists()


def test_payments_opened_in_a_stream_are_each_charged_once_by_a_few_dispatch_passes(celery_worker, sandbox):
    before = charge_kicker.sent + charge_kicker.skipped
    sent_before = charge_kicker.sent
    for batch in range(6):  # six receive batches in quick succession
        payments_create_for_invoices(invoices=invoices(f"stream{batch}", 5))
        time.sleep(0.02)
    wait_until(lambda: Payment.objects.filter(status="succeeded").count() == 30, timeout=120)
    assert stats(sandbox)["charges"] == 30
    assert charge_kicker.sent + charge_kicker.skipped > before
    assert charge_kicker.sent - sent_before <= 3  # six commits, at most a kick per 0.5 s


def test_a_send_that_fails_gives_the_lease_back(sqs, empty_queues, monkeypatch):
    payments_create(3, "pending", next_attempt_at=timezone.now() - timedelta(seconds=1))

    def broker_down(ids):
        raise ConnectionError("the broker did not answer")

    monkeypatch.setattr(dispatching, "enqueue_charges", broker_down)
    with pytest.raises(ConnectionError):
        charges_dispatch()
    # due again at once (not leased for PAYMENT_CHARGE_LEASE_SECONDS), and later commits kick again
    assert Payment.objects.filter(next_attempt_at__lte=timezone.now()).count() == 3
    assert not marker_held()
    monkeypatch.undo()
    assert charges_dispatch() == 3
    assert sum(charges_queued(sqs).values()) == 3


def test_a_pass_out_of_time_hands_the_payments_still_due_to_a_new_pass(
    sqs, empty_queues, settings, monkeypatch
):
    settings.PAYMENT_DISPATCH_BATCH = 2
    payments_create(5, "pending", next_attempt_at=timezone.now() - timedelta(seconds=1))
    kicks = []
    monkeypatch.setattr(charge_kicker, "request", lambda: kicks.append(marker_held()))
    # a pass with no time left: one batch, then its last look (after clearing the marker) another
    assert charges_dispatch(max_seconds=0) == 4
    assert kicks == [False]  # a full last batch: more may be due, so a new pass is asked for
    assert charges_dispatch() == 1
    assert kicks == [False]
    assert sum(charges_queued(sqs).values()) == 5


def test_two_passes_at_once_never_send_one_payment_twice(sqs, empty_queues, settings):
    settings.PAYMENT_DISPATCH_BATCH = 10
    payments_create(200, "pending", next_attempt_at=timezone.now() - timedelta(seconds=1))
    counts: list[int] = []
    barrier = threading.Barrier(3)

    def a_pass() -> None:
        from django.db import connection

        barrier.wait()
        try:
            counts.append(charges_dispatch())
        finally:
            connection.close()

    threads = [threading.Thread(target=a_pass) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sum(counts) == 200
    sent = charges_queued(sqs)
    assert len(sent) == 200 and set(sent.values()) == {1}
    assert len([c for c in counts if c]) >= 2  # the passes did run side by side


def test_the_queue_ahead_of_the_gateway_is_bounded_and_a_follow_up_sends_the_rest_as_it_drains(
    sqs, empty_queues, settings
):
    # given 6 s of a 10 charges/s gateway as the bound (60 queued at most) and 100 payments due
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 10
    settings.PAYMENT_DISPATCH_AHEAD_SECONDS = 6
    payments_create(100, "pending", next_attempt_at=timezone.now() - timedelta(seconds=1))
    sent: Counter[str] = Counter()
    # when a pass runs: 60 are sent, and a follow-up pass is queued for 3 s later
    assert charges_dispatch() == 60
    sent += charges_queued(sqs)
    [(name, _kw, headers)] = queued(sqs, DISPATCH_QUEUE)
    assert name == "payments.dispatch_charges" and headers["eta"] is not None
    # and kicks wait for it meanwhile; nor does the sweep go past the bound
    assert not kick_claim(CHARGES)
    assert payments_retry_due() == 0
    assert len(sent) == 60
    # when the gateway has taken 30 of them, the follow-up sends 30 more, and queues another
    Payment.objects.filter(pk__in=list(sent)[:30]).update(status="succeeded", next_attempt_at=None)
    assert charges_dispatch() == 30
    sent += charges_queued(sqs)
    assert tasks_queued(sqs, DISPATCH_QUEUE) == {"payments.dispatch_charges": 1}
    # when all are done, the last 10 go, and the pass stops for good, the marker cleared
    Payment.objects.filter(pk__in=list(sent)).update(status="succeeded", next_attempt_at=None)
    assert charges_dispatch() == 10
    sent += charges_queued(sqs)
    assert tasks_queued(sqs, DISPATCH_QUEUE) == {}
    assert not marker_held()
    assert len(sent) == 100 and set(sent.values()) == {1}


def test_a_failed_send_gives_back_only_the_leases_no_charge_has_moved_on(sqs, empty_queues, monkeypatch):
    # given three due payments, and a pass whose send fails part-way: the first chunk went out and
    # its charge already ran (soft decline: the next dunning step is scheduled a day on)
    payments_create(3, "pending", next_attempt_at=timezone.now() - timedelta(seconds=1))
    tomorrow = timezone.now() + timedelta(days=1)

    def sent_some_then_failed(charges):
        Payment.objects.filter(pk=charges[0][0]).update(
            status="retry_scheduled", dunning_step=1, next_attempt_at=tomorrow
        )
        raise ConnectionError("the broker went away mid-send")

    monkeypatch.setattr(dispatching, "enqueue_charges", sent_some_then_failed)
    with pytest.raises(ConnectionError):
        charges_dispatch()
    # then the dunning step keeps its day: only the two leases nothing moved on are due again
    assert Payment.objects.filter(status="retry_scheduled", next_attempt_at=tomorrow).count() == 1
    assert Payment.objects.filter(next_attempt_at__lte=timezone.now()).count() == 2
    monkeypatch.undo()
    assert charges_dispatch() == 2


def test_payments_opened_on_a_host_whose_clock_is_ahead_are_sent_by_the_pass_their_commit_kicks(
    sqs, empty_queues, monkeypatch
):
    # given the consumer's host clock 10 s ahead of the database's
    monkeypatch.setattr(charge_kicker, "enabled", lambda: False)  # this test runs the pass itself
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(seconds=10))
    payments_create_for_invoices(invoices=invoices("skew", 3))
    monkeypatch.setattr(timezone, "now", real_now)
    # when the pass its commit kicked runs (at once): it sends them, not the sweep 30 s later
    assert charges_dispatch() == 3
    assert sum(charges_queued(sqs).values()) == 3


def test_a_copy_of_a_charge_message_never_charges_the_next_dunning_step_early(sandbox, monkeypatch):
    # given a payment whose first charge was soft-declined: its next step is due in a day
    monkeypatch.setattr(charge_kicker, "enabled", lambda: False)  # this test charges it itself
    [(payment, _)] = payments_create_for_invoices(invoices=[invoice_data("soft1-copy")])
    assert payment_charge(payment_id=str(payment.pk), step=0) == "soft_declined"
    declined = Payment.objects.get(pk=payment.pk)
    assert declined.status == "retry_scheduled" and declined.dunning_step == 1
    # when a copy of the first step's message arrives (a dispatch sent its batch again after a
    # send failed part-way; an operator's retry while it was queued)
    assert payment_charge(payment_id=str(payment.pk), step=0) == "skipped"
    # then the gateway is not asked again: the next step keeps its day
    after = Payment.objects.get(pk=payment.pk)
    assert (after.status, after.next_attempt_at) == ("retry_scheduled", declined.next_attempt_at)
    assert after.attempts.count() == 1
    # and the message for the next step, when it is due, charges it
    assert payment_charge(payment_id=str(payment.pk), step=1) == "succeeded"


def test_dunning_retries_coming_due_together_keep_the_bound_too(sqs, empty_queues, settings):
    # given 6 s of a 10 charges/s gateway as the bound (60 queued at most) and 100 dunning retries
    # due at once (a daily run's soft declines a day later; a gateway outage's payments after it)
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 10
    settings.PAYMENT_DISPATCH_AHEAD_SECONDS = 6
    payments_create(100, "retry_scheduled", next_attempt_at=timezone.now() - timedelta(seconds=1))
    # when a pass runs: the charges it queued count against the bound, as a new payment's do
    assert charges_dispatch() == 60
    assert len(charges_queued(sqs)) == 60
    # nor does the sweep, nor the follow-up, send more while they are queued
    assert payments_retry_due() == 0
    assert charges_dispatch() == 0
    assert tasks_queued(sqs) == {}


def test_a_follow_up_under_a_short_bound_still_waits_for_the_queue_to_drain(sqs, empty_queues, settings):
    # given a bound of a second of the gateway's rate (half of it rounds to no countdown at all)
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 10
    settings.PAYMENT_DISPATCH_AHEAD_SECONDS = 1
    payments_create(20, "pending", next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert charges_dispatch() == 10
    # then the follow-up is not due at once: a pass meeting the same full queue would send another,
    # and so on, a loop of passes on the default queue for as long as the queue stays full
    [(name, _kw, headers)] = queued(sqs, DISPATCH_QUEUE)
    assert name == "payments.dispatch_charges" and headers["eta"] is not None
