"""End to end over real SNS/SQS, PostgreSQL and a real Celery worker.

agreement created -> agreement.created reaches invoicing -> daily run (twice at once)
-> invoice.issued published.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from agreements.services import AgreementInput, agreement_create
from core.calendar import billing_today
from events import topology
from events.consuming.config import consumer_configs
from events.consuming.push import PushConsumer
from events.models import OutboxEvent
from events.topology import aws
from invoicing.models import BillableAgreement, DailyRun, Invoice
from invoicing.tasks import issue_due_invoices
from tests.helpers import wait_until


def drain(sqs, queue: str) -> list[dict]:
    url = aws.queue_url(queue)
    got = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        )
        if not msgs:
            return got
        got.extend(json.loads(m["Body"]) for m in msgs)
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
        )


@pytest.mark.slow
def test_agreement_to_published_invoices_with_two_runs_at_once(settings, celery_worker, sqs):
    settings.OUTBOX_KICK_RELAY = True  # commits kick the relay task in the real worker
    settings.INVOICING_CHUNK_SIZE = 2
    consumer = PushConsumer(consumer_configs()["invoicing"])
    consumer.start()
    try:
        # given agreements created through the service, billed daily since 3 days ago
        today = billing_today()
        created = [
            agreement_create(
                data=AgreementInput(
                    external_ref=f"E2E-{i}",
                    customer_name="Ada",
                    customer_email="ada@example.com",
                    amount_minor=1000 + i,
                    currency="EUR",
                    interval="day",
                    start_date=today - timedelta(days=3),
                )
            )
            for i in range(5)
        ]
        # when agreement.created travels outbox -> SNS -> invoicing's queue -> its handler
        wait_until(lambda: BillableAgreement.objects.filter(created_seen=True).count() == 5, timeout=60)
        # (version 2: invoicing knows each agreement by its own external ref)
        projected = dict(BillableAgreement.objects.values_list("agreement_id", "external_ref"))
        assert projected == {str(a.id): a.external_ref for a in created}

        # and the daily run is started twice at once through the broker
        issue_due_invoices.apply_async(kwargs={"run_date": today.isoformat()})
        issue_due_invoices.apply_async(kwargs={"run_date": today.isoformat()})
        wait_until(lambda: DailyRun.objects.filter(finished_at__isnull=False).count() == 2, timeout=90)

        # then each agreement has exactly its 4 due periods (3 missed days + today), once
        assert Invoice.objects.count() == 20
        for a in created:
            starts = sorted(
                Invoice.objects.filter(agreement_id=str(a.id)).values_list("period_start", flat=True)
            )
            assert starts == [today - timedelta(days=d) for d in (3, 2, 1, 0)]
        # and every invoice.issued was published and reached the payments queue, once each
        wait_until(lambda: not OutboxEvent.objects.filter(published_at__isnull=True).exists(), timeout=60)
        issued = [
            b for b in drain(sqs, topology.event_queue_name("payments")) if b["type"] == "invoice.issued"
        ]
        assert sorted(b["data"]["invoice_id"] for b in issued) == sorted(
            str(i) for i in Invoice.objects.values_list("id", flat=True)
        )
    finally:
        consumer.stop()
