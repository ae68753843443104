"""Payments end to end: real SQS, real worker, the shipped sandbox gateway over HTTP, real SMTP."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from events import topology
from events.consuming.config import consumer_configs
from events.consuming.pull import pull_once
from events.consuming.push import PushConsumer
from events.models import OutboxEvent
from events.publishing.relay import relay_pending
from events.topology import aws
from invoicing.models import Invoice
from invoicing.services import invoices_run_inline, projection_apply
from invoicing.tests.factories import agreement_event
from payments.dispatch import charge_kicker
from payments.models import Payment
from payments.services import payment_create_for_invoice, payments_retry_due
from tests.factories import gateway_stats as stats
from tests.factories import invoice_data, send
from tests.helpers import wait_until

pytestmark = pytest.mark.slow


def settled(payment_id) -> Payment | None:
    p = Payment.objects.get(pk=payment_id)
    return p if p.status in ("succeeded", "failed", "retry_scheduled") else None


def test_invoice_issued_delivered_twice_gives_one_payment_and_one_charge(celery_worker, sandbox, sqs):
    body = json.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": "invoice.issued",
            "schema_version": 1,
            "occurred_at": "2026-11-27T10:00:00Z",
            "producer": "invoicing",
            "aggregate_type": "invoice",
            "aggregate_id": "I-1",
            "aggregate_version": 1,
            "data": invoice_data(invoice_id="I-1"),
        }
    )
    name = topology.event_queue_name("payments")
    consumer = PushConsumer(consumer_configs()["payments"])
    consumer.start()
    try:
        send(sqs, [body], queue=name)
        send(sqs, [body], queue=name)
        wait_until(lambda: Payment.objects.filter(invoice_id="I-1", status="succeeded").exists(), timeout=120)
        wait_until(lambda: consumer.handled == 2, timeout=30)
    finally:
        consumer.stop()
    assert Payment.objects.count() == 1
    assert stats(sandbox)["charges"] == 1
    assert OutboxEvent.objects.filter(type="payment.succeeded").count() == 1


def test_lost_response_retry_gets_the_original_result_and_one_charge(celery_worker, sandbox):
    payment, _ = payment_create_for_invoice(data=invoice_data("lost-1"))
    p = wait_until(lambda: Payment.objects.filter(pk=payment.pk, status="succeeded").first(), timeout=120)
    attempts = list(p.attempts.values_list("idempotency_key", "outcome"))
    assert [a[1] for a in attempts] == ["transient", "succeeded"]
    assert len({a[0] for a in attempts}) == 1  # the same key both times
    assert stats(sandbox)["charges"] == 1 and stats(sandbox)["replays"] == 1


def test_transient_errors_then_success(celery_worker, sandbox):
    payment, _ = payment_create_for_invoice(data=invoice_data("transient2-1"))
    p = wait_until(lambda: Payment.objects.filter(pk=payment.pk, status="succeeded").first(), timeout=120)
    assert list(p.attempts.values_list("outcome", flat=True)) == ["transient", "transient", "succeeded"]
    assert stats(sandbox)["charges"] == 1


def _come_due(payment_id) -> None:
    Payment.objects.filter(pk=payment_id).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    payments_retry_due()


def test_soft_decline_follows_the_dunning_schedule_to_success(celery_worker, sandbox):
    payment, _ = payment_create_for_invoice(data=invoice_data("soft1-1"))
    p = wait_until(lambda: settled(payment.pk), timeout=120)
    assert p.status == "retry_scheduled" and p.dunning_step == 1
    assert timedelta(hours=23) < p.next_attempt_at - timezone.now() <= timedelta(days=1)  # +1 day
    _come_due(payment.pk)
    p = wait_until(lambda: Payment.objects.filter(pk=payment.pk, status="succeeded").first(), timeout=120)
    assert list(
        OutboxEvent.objects.filter(aggregate_id=str(p.id))
        .order_by("aggregate_version")
        .values_list("type", "data__final")
    ) == [("payment.failed", False), ("payment.succeeded", None)]


def test_soft_declines_exhaust_the_schedule_to_final_failure(celery_worker, sandbox, settings):
    payment, _ = payment_create_for_invoice(data=invoice_data("soft-1"))
    gaps = []
    for step in range(1, 4):
        p = wait_until(
            lambda step=step: Payment.objects.filter(
                pk=payment.pk, status="retry_scheduled", dunning_step=step
            ).first(),
            timeout=60,
        )
        gaps.append(round((p.next_attempt_at - timezone.now()).total_seconds() / 86400))
        _come_due(payment.pk)
    p = wait_until(lambda: Payment.objects.filter(pk=payment.pk, status="failed").first(), timeout=120)
    assert gaps == settings.PAYMENT_DUNNING_DAYS == [1, 3, 7]
    finals = list(
        OutboxEvent.objects.filter(type="payment.failed", aggregate_id=str(p.id))
        .order_by("aggregate_version")
        .values_list("data__final", flat=True)
    )
    assert finals == [False, False, False, True]
    assert OutboxEvent.objects.filter(type="alert.payment_failed").count() == 1


def test_hard_decline_fails_at_once_and_the_alert_email_arrives(celery_worker, sandbox, smtp):
    payment, _ = payment_create_for_invoice(data=invoice_data("hard-1"))
    p = wait_until(lambda: settled(payment.pk), timeout=120)
    assert p.status == "failed" and p.attempts.count() == 1 and p.last_error_class == "hard_decline"
    # the alert travels: outbox -> alerts topic -> alerts_mail queue -> handler -> SMTP
    relay_pending()
    wait_until(lambda: pull_once("alerts_mail").outcomes.get("handled"), timeout=30)
    [mail] = smtp.messages
    assert mail.rcpt_tos == ["ops@example.com"]
    assert "alert.payment_failed" in mail.content.decode() and p.invoice_number in mail.content.decode()


@pytest.mark.parametrize("customer, expected", [("C-A", "paid"), ("hard-A", "uncollectible")])
def test_payment_outcome_reaches_invoicing(celery_worker, sandbox, customer, expected):
    projection_apply(
        event=agreement_event(
            "agreement.created",
            "A",
            1,
            start_date="2026-01-01",
            customer={"external_ref": customer, "name": "Ada", "email": "ada@example.com"},
        )
    )
    invoices_run_inline(run_date=date(2026, 1, 1))
    invoice = Invoice.objects.get()
    relay_pending()  # invoice.issued -> payments queue
    wait_until(lambda: pull_once("payments").received, timeout=30)
    wait_until(
        lambda: Payment.objects.filter(
            invoice_id=str(invoice.id), status__in=["succeeded", "failed"]
        ).exists(),
        timeout=60,
    )
    relay_pending()  # payment.* -> invoicing queue
    wait_until(lambda: pull_once("invoicing").outcomes.get("handled"), timeout=30)
    invoice.refresh_from_db()
    assert invoice.status == expected


def _queued_charges(sqs) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=aws.queue_url(topology.task_queue_name("payments")),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


@pytest.mark.django_db(transaction=True)
def test_retry_sweep_does_not_enqueue_a_charge_that_is_already_queued(
    empty_queues, sqs, settings, monkeypatch
):
    """A backlog at the gateway's pace must not snowball: each sweep would otherwise add a copy."""
    monkeypatch.setattr(charge_kicker, "enabled", lambda: False)  # its kick was lost: the sweep's turn
    payment, _ = payment_create_for_invoice(data=invoice_data("cus-queued"))  # no worker: stays queued
    assert _queued_charges(sqs) == 0
    assert payments_retry_due() == 1  # due since it opened
    for _ in range(3):
        assert payments_retry_due() == 0
    assert _queued_charges(sqs) == 1
    # the queued message was lost: once its lease has run out, the sweep enqueues it again, once
    Payment.objects.filter(pk=payment.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert payments_retry_due() == 1
    assert payments_retry_due() == 0
    assert _queued_charges(sqs) == 2
    p = Payment.objects.get(pk=payment.pk)
    lease = timedelta(seconds=settings.PAYMENT_CHARGE_LEASE_SECONDS)
    assert lease - timedelta(seconds=30) < p.next_attempt_at - timezone.now() <= lease


def test_a_charge_left_processing_by_a_dead_worker_is_taken_over_and_charged_once(
    celery_worker, sandbox, settings, sqs
):
    with transaction.atomic():  # its worker "died" mid-charge: "processing", nobody on it
        stuck, _ = payment_create_for_invoice(data=invoice_data("cus-stuck"))
        Payment.objects.filter(pk=stuck.pk).update(status="processing")
    # the queued charge finds it "processing" and fresh (another worker's?) and leaves it alone
    wait_until(lambda: _queued_charges(sqs) == 0, timeout=60)
    assert payments_retry_due() == 0
    assert Payment.objects.get(pk=stuck.pk).status == "processing" and stats(sandbox)["charges"] == 0
    stale = timezone.now() - timedelta(seconds=settings.PAYMENT_PROCESSING_STALE_SECONDS + 1)
    Payment.objects.filter(pk=stuck.pk).update(updated_at=stale)
    assert payments_retry_due() == 1
    wait_until(lambda: Payment.objects.filter(pk=stuck.pk, status="succeeded").exists(), timeout=120)
    assert stats(sandbox)["charges"] == 1
    assert payments_retry_due() == 0
