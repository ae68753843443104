"""Security: CSRF on admin actions, inert SQL/HTML in search, no secrets in logs or events."""

from __future__ import annotations

import json
import logging

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import transaction
from django.test import Client, override_settings
from prometheus_client import REGISTRY

from events import contracts
from events.consuming.batch import Received, process_batch
from events.consuming.runtime import HANDLED, POISON, ConsumerRuntime
from events.models import ApiToken, ConsumerFailure, OutboxEvent
from events.publishing import record_event
from events.signing import signed_attributes
from events.topology import aws
from invoicing.models import BillableAgreement
from tests.factories import agreement_data, envelope

pytestmark = pytest.mark.django_db


def test_admin_actions_need_a_csrf_token():
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_superuser("op", password="pw"))
    resp = client.post("/admin/payments/payment/", {"action": "retry_now", "_selected_action": ["x"]})
    assert resp.status_code == 403 and b"CSRF" in resp.content
    assert client.post("/admin/messaging/", {"redrive": "payments"}).status_code == 403


def test_sql_and_html_in_admin_search_stay_inert(client):
    client.force_login(User.objects.create_superuser("op", password="pw"))
    with transaction.atomic():
        record_event(
            sender=None,
            type=contracts.AGREEMENT_CREATED,
            aggregate_id="safe",
            aggregate_version=1,
            data=agreement_data("safe"),
        )
    for q in ["'; DROP TABLE events_outboxevent; --", "<script>alert(1)</script>", "' OR '1'='1"]:
        for url in (
            "/admin/events/outboxevent/",
            "/admin/agreements/agreement/",
            "/admin/invoicing/invoice/",
            "/admin/payments/payment/",
        ):
            resp = client.get(url, {"q": q})
            assert resp.status_code == 200
            assert "<script>alert(1)</script>" not in resp.content.decode()
    assert OutboxEvent.objects.count() == 1  # the table is still there, untouched


def test_api_tokens_never_reach_logs_or_events(client, caplog, capsys):
    call_command("api_token_create", "svc")
    token = capsys.readouterr().out.strip()
    with caplog.at_level(logging.DEBUG):
        client.get("/api/events/", HTTP_AUTHORIZATION=f"Bearer {token}")
        client.get("/api/events/", HTTP_AUTHORIZATION="Bearer wrong-token-value-123")
    # request logging (401s included) never writes the Authorization header; scrubbing of
    # anything that does slip into a message is covered in events/tests/test_logs.py
    assert token not in caplog.text and "wrong-token-value-123" not in caplog.text
    # nor is it kept in clear: the database holds its SHA-256 only
    [stored] = ApiToken.objects.values_list("key_hash", flat=True)
    assert stored == ApiToken.hash_key(token) and stored != token


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_forged_unsigned_and_badly_signed_events_are_dead_lettered_and_change_nothing(
    celery_worker, sandbox, sqs, settings
):
    from datetime import date

    from events import topology
    from events.consuming.config import consumer_configs
    from events.consuming.push import PushConsumer
    from events.models import ConsumerFailure
    from invoicing.models import Invoice
    from invoicing.services import invoices_run_inline, projection_apply
    from invoicing.tests.factories import agreement_event
    from payments.models import Payment
    from tests.factories import body, drain, envelope, gateway_stats, invoice_envelope
    from tests.helpers import wait_until

    # given a real open invoice
    projection_apply(event=agreement_event("agreement.created", "SEC", 1, start_date="2026-01-01"))
    invoices_run_inline(run_date=date(2026, 1, 1))
    invoice = Invoice.objects.get()
    paid = {
        "payment_id": "forged",
        "invoice_id": str(invoice.id),
        "amount_minor": 1000,
        "currency": "EUR",
        "gateway_reference": "ch_forged",
    }
    forged_paid = envelope("X") | {
        "type": "payment.succeeded",
        "producer": "agreements",  # right shape, wrong producer
        "aggregate_type": "agreement",
        "data": paid,
    }
    huge = invoice_envelope("I-HUGE", total_minor=10**13)
    settings.EVENT_SIGNING_KEYS = {**settings.EVENT_SIGNING_KEYS, "old": "k" * 40}
    with override_settings(EVENT_SIGNING_KEY_ID="old"):
        retired = signed_attributes(body(invoice_envelope("I-OLD")))
    settings.EVENT_SIGNING_KEYS = {k: v for k, v in settings.EVENT_SIGNING_KEYS.items() if k != "old"}
    sends = [
        ("invoicing", body(forged_paid), signed_attributes(body(forged_paid)), "produced by 'payments'"),
        ("payments", body(huge), None, "unsigned message"),
        ("payments", body(huge), {**signed_attributes(body(huge) + " "), "x": None}, "bad signature"),
        ("payments", body(invoice_envelope("I-OLD")), retired, "unknown or retired key 'old'"),
    ]
    consumers = [PushConsumer(consumer_configs()[name]) for name in ("invoicing", "payments")]
    for c in consumers:
        c.start()
    try:
        # when each is posted straight into the consumer queues, as anyone with SendMessage could
        for consumer, text, attrs, _ in sends:
            attributes = {k: v for k, v in (attrs or {}).items() if v}
            sqs.send_message(
                QueueUrl=aws.queue_url(topology.event_queue_name(consumer)),
                MessageBody=text,
                MessageAttributes=attributes,
            )
        wait_until(lambda: ConsumerFailure.objects.filter(poisoned=True).count() == len(sends), timeout=60)
    finally:
        for c in consumers:
            c.stop()
    # then every one is in its DLQ with the reason, and nothing happened
    dead = drain(sqs, topology.event_queue_name("invoicing") + "-dlq") + drain(
        sqs, topology.event_queue_name("payments") + "-dlq"
    )
    reasons = sorted(m["MessageAttributes"]["error"]["StringValue"] for m in dead)
    for _, _, _, reason in sends:
        assert any(reason in r for r in reasons), (reason, reasons)
    invoice.refresh_from_db()
    assert invoice.status == "open" and invoice.payment_id == ""
    assert not Payment.objects.exists()
    assert gateway_stats(sandbox)["requests"] == 0


@pytest.mark.django_db
def test_a_forged_message_whose_envelope_holds_a_lone_surrogate_is_poison_at_once_beside_a_good_one():
    # an unsigned body, plain ASCII JSON (SQS takes it), whose type and aggregate id hold the
    # escape of a lone surrogate, which UTF-8 (and so PostgreSQL) cannot encode
    forged = json.dumps(envelope("S-1") | {"type": "agreement.\ud800", "aggregate_id": "S-\udfff"})
    assert forged.isascii()
    good = json.dumps(envelope("S-2"))
    before = REGISTRY.get_sample_value(
        "billing_events_handled_total", {"consumer": "invoicing", "type": "?", "outcome": POISON}
    )

    outcomes = process_batch(
        ConsumerRuntime("invoicing"),
        [
            Received(forged, message_id="m-forged", attributes={}),
            Received(good, message_id="m-good", attributes=signed_attributes(good)),
        ],
    )

    # refused at once (to the DLQ), with its reason on record, and the good one applied
    assert [o.result for o in outcomes] == [POISON, HANDLED]
    failure = ConsumerFailure.objects.get(message_id="m-forged")
    assert failure.poisoned and "signature" in failure.last_error.lower()
    assert (failure.event_type, failure.aggregate_id) == ("agreement.\\ud800", "S-\\udfff")
    assert BillableAgreement.objects.filter(agreement_id="S-2").exists()
    # counted under "?", not under a label the forger chose
    after = REGISTRY.get_sample_value(
        "billing_events_handled_total", {"consumer": "invoicing", "type": "?", "outcome": POISON}
    )
    assert after == (before or 0) + 1
    assert (
        REGISTRY.get_sample_value(
            "billing_events_handled_total",
            {"consumer": "invoicing", "type": "agreement.\ud800", "outcome": POISON},
        )
        is None
    )
