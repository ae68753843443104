"""Automated checks: breach -> one alert (and one e-mail); still breached -> nothing; cleared -> resolved."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from events import contracts
from events.consuming.pull import pull_once
from events.models import AlertState, Heartbeat, OutboxEvent
from events.operations.alerts import monitor_run
from events.publishing.outbox import record_event
from events.publishing.relay import relay_pending
from events.topology import aws
from tests.factories import agreement_data

pytestmark = pytest.mark.django_db(transaction=True)
AUDIT_DLQ = "billing-test-audit-events-dlq"


def alerts(check: str) -> list[str]:
    return list(
        OutboxEvent.objects.filter(aggregate_id=f"check:{check}")
        .order_by("aggregate_version")
        .values_list("type", flat=True)
    )


def dlq_breach(sqs, settings):
    sqs.send_message(QueueUrl=aws.queue_url(AUDIT_DLQ), MessageBody="{}")


def dlq_clear(sqs, settings):
    sqs.purge_queue(QueueUrl=aws.queue_url(AUDIT_DLQ))


def age_breach(sqs, settings):
    settings.MONITOR_QUEUE_MAX_AGE_SECONDS = 60
    sqs.send_message(QueueUrl=aws.queue_url("billing-test-audit-events"), MessageBody="{}")
    Heartbeat.objects.update_or_create(
        name="queue:billing-test-audit-events",
        defaults={"beat_at": timezone.now(), "detail": {"oldest_age": 600}},
    )


def age_clear(sqs, settings):
    sqs.purge_queue(QueueUrl=aws.queue_url("billing-test-audit-events"))


def outbox_breach(sqs, settings):
    with transaction.atomic():
        record_event(
            sender=None,
            type=contracts.AGREEMENT_CREATED,
            aggregate_id="late",
            aggregate_version=1,
            data=agreement_data("late"),
            occurred_at=timezone.now() - timedelta(hours=1),
        )


def outbox_clear(sqs, settings):
    relay_pending()


def daily_breach(sqs, settings):
    Heartbeat.objects.create(name="daily_run", beat_at=timezone.now() - timedelta(hours=30))


def daily_clear(sqs, settings):
    Heartbeat.objects.filter(name="daily_run").update(beat_at=timezone.now())


def _payment_events(type_: str, n: int, final: bool | None = None) -> None:
    with transaction.atomic():
        for i in range(n):
            data = {
                "payment_id": f"p{type_}{i}",
                "invoice_id": f"i{i}",
                "amount_minor": 100,
                "currency": "EUR",
            }
            if type_ == contracts.PAYMENT_FAILED:
                data |= {"final": final, "error_class": "hard_decline", "error_message": "x", "attempts": 1}
            else:
                data |= {"gateway_reference": "ch"}
            record_event(
                sender=None, type=type_, aggregate_id=f"{type_}-{i}-{final}", aggregate_version=1, data=data
            )


def rate_breach(sqs, settings):
    settings.MONITOR_PAYMENT_MIN_OUTCOMES = 5
    _payment_events(contracts.PAYMENT_FAILED, 5, final=True)


def rate_clear(sqs, settings):
    _payment_events(contracts.PAYMENT_SUCCEEDED, 40)


CHECKS = {
    "dlq_not_empty": (dlq_breach, dlq_clear),
    "queue_message_too_old": (age_breach, age_clear),
    "outbox_lagging": (outbox_breach, outbox_clear),
    "daily_run_missed": (daily_breach, daily_clear),
    "payment_failure_rate": (rate_breach, rate_clear),
}


@pytest.mark.parametrize("check", list(CHECKS))
def test_breach_alerts_once_then_resolves(check, empty_queues, sqs, settings, smtp):
    breach, clear = CHECKS[check]
    relay_pending()
    assert monitor_run() == []  # all clear to begin with

    breach(sqs, settings)
    assert monitor_run() == [f"alert.{check}"]
    assert monitor_run() == []  # still breached a minute later: no second alert
    assert AlertState.objects.get(name=check).breached

    # the alert reaches the operators' mailbox through the alerts topic and queue
    relay_pending()
    pull_once("alerts_mail")
    assert len(smtp.messages) == 1 and f"alert.{check}" in smtp.messages[0].content.decode()

    clear(sqs, settings)
    assert monitor_run() == [f"alert.resolved:{check}"]
    assert alerts(check) == [f"alert.{check}", "alert.resolved"]
    body = json.loads(
        OutboxEvent.objects.get(aggregate_id=f"check:{check}", type="alert.resolved").message_body()
    )
    assert body["data"]["check"] == check


def test_a_missing_queue_alerts_once_then_resolves_when_provisioned(empty_queues, delete_queue, smtp):

    relay_pending()
    assert monitor_run() == []
    # when a provisioned queue disappears (deleted, an account cleanup)
    delete_queue("billing-test-celery-payments")
    # then one critical alert names it, and reaches the operators' mailbox
    assert monitor_run() == ["alert.queues_missing"]
    assert monitor_run() == []
    relay_pending()
    pull_once("alerts_mail")
    assert len(smtp.messages) == 1
    assert "billing-test-celery-payments" in smtp.messages[0].content.decode()
    # and it resolves once messaging_provision recreated the queue
    delete_queue.restore()
    assert monitor_run() == ["alert.resolved:queues_missing"]
    assert alerts("queues_missing") == ["alert.queues_missing", "alert.resolved"]
