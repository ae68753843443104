"""Self-healing delivery, end to end: a consumer queue loses its messages with events unhandled;
beat's delivery audit finds them and re-sends them, and everything is handled within two passes,
with one alert per gap and no doubled effect (one invoice per period, one charge per invoice at
the gateway). Real PostgreSQL, the SNS/SQS endpoint, a real Celery worker, the push consumers of
invoicing and payments, and the sandbox gateway over HTTP."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from django.db.models import Count

from agreements.services import AgreementInput, agreement_create
from events import contracts, topology
from events.consuming.config import consumer_configs
from events.consuming.push import PushConsumer
from events.models import OutboxEvent, ProcessedEvent
from events.tasks import delivery_audit
from events.topology import aws
from invoicing.models import Invoice
from invoicing.services import billing_today
from invoicing.tasks import issue_due_invoices
from payments.models import Payment
from tests.factories import gateway_stats
from tests.helpers import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
N = 20
GRACE = 2


@pytest.fixture
def stack(settings, celery_worker, sandbox):
    """The pipeline as `make run` wires it, each push consumer started (and stopped) by the test."""
    settings.OUTBOX_KICK_RELAY = True
    settings.DELIVERY_AUDIT_GRACE_SECONDS = GRACE
    settings.DELIVERY_AUDIT_CONSUMERS = "invoicing,payments"
    running: dict[str, PushConsumer] = {}

    def start(name: str) -> None:
        running[name] = PushConsumer(consumer_configs()[name])
        running[name].start()

    def stop(name: str) -> None:
        running.pop(name).stop()

    yield SimpleNamespace(start=start, stop=stop, gateway=sandbox)
    for consumer in running.values():
        consumer.stop()


def handled(consumer: str, event_type: str) -> int:
    return ProcessedEvent.objects.filter(consumer=consumer, event_type=event_type).count()


def alerts() -> list[tuple[str, str]]:
    rows = OutboxEvent.objects.filter(producer="alerts").order_by("occurred_at")
    return [(r.type, r.data["details"].get("consumer", "")) for r in rows]


def past_grace() -> None:
    time.sleep(GRACE + 0.5)


def test_lost_queued_messages_are_all_handled_within_two_audit_passes_with_no_doubled_effect(stack, sqs):
    # given agreements whose agreement.created reached the invoicing queue, not its consumer
    stack.start("payments")
    today = billing_today()
    for i in range(N):
        agreement_create(
            data=AgreementInput(
                external_ref=f"HEAL-{i}",
                customer_ref=f"cus-heal-{i}",
                customer_name="Ada",
                customer_email="ada@example.com",
                amount_minor=1000 + i,
                currency="EUR",
                interval="day",
                start_date=today,
            )
        )
    created = OutboxEvent.objects.filter(type=contracts.AGREEMENT_CREATED)
    wait_until(lambda: created.filter(published_at__isnull=False).count() == N, 60)

    # when the queue loses every message (a restart of an endpoint that keeps them in memory)
    sqs.purge_queue(QueueUrl=aws.queue_url(topology.event_queue_name("invoicing")))
    stack.start("invoicing")
    past_grace()
    assert handled("invoicing", contracts.AGREEMENT_CREATED) == 0

    # then the first pass re-sends them, the consumer handles them, the second finds none missing
    assert delivery_audit() == {"invoicing": N, "payments": 0}
    wait_until(lambda: handled("invoicing", contracts.AGREEMENT_CREATED) == N, 60)
    assert delivery_audit() == {"invoicing": 0, "payments": 0}
    assert alerts() == [("alert.delivery_gap", "invoicing"), ("alert.resolved", "invoicing")]

    # given the day's invoices issued while payments' consumer is down
    stack.stop("payments")
    issue_due_invoices.apply_async(kwargs={"run_date": today.isoformat()})
    issued = OutboxEvent.objects.filter(type=contracts.INVOICE_ISSUED)
    wait_until(lambda: issued.filter(published_at__isnull=False).count() == N, 90)
    # when half of the queued invoice.issued are lost, and the other half still queued past the grace
    url = aws.queue_url(topology.event_queue_name("payments"))
    lost = 0
    while lost < N // 2:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=min(10, N // 2 - lost)).get(
            "Messages", []
        )
        for m in msgs:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        lost += len(msgs)
    past_grace()

    # then the audit re-sends all of them (the queued half twice over: harmless) and they are handled
    assert delivery_audit() == {"invoicing": 0, "payments": N}
    stack.start("payments")
    wait_until(lambda: handled("payments", contracts.INVOICE_ISSUED) == N, 60)
    assert delivery_audit() == {"invoicing": 0, "payments": 0}
    wait_until(lambda: Payment.objects.filter(status="succeeded").count() == N, 120)

    # and no effect is doubled: one invoice per period, one payment and one charge per invoice
    assert Invoice.objects.count() == N
    assert not Invoice.objects.values("agreement_id", "period_start").annotate(n=Count("id")).filter(n__gt=1)
    assert Payment.objects.count() == N
    stats = gateway_stats(stack.gateway)
    payments = {str(p.id): str(p.invoice_id) for p in Payment.objects.all()}
    charged = [payments[key.removeprefix("pay-").split("#")[0]] for key in stats["charges_by_key"]]
    assert stats["charges"] == N and set(stats["charges_by_key"].values()) == {1}
    assert sorted(charged) == sorted(payments.values())  # every invoice charged exactly once
    assert alerts() == [
        ("alert.delivery_gap", "invoicing"),
        ("alert.resolved", "invoicing"),
        ("alert.delivery_gap", "payments"),
        ("alert.resolved", "payments"),
    ]
