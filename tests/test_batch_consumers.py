"""Batch consumers: invoicing's projection and payments' invoice.issued take a receive batch at once.

Per-event semantics are the same as one message at a time (poison, duplicates, failures), with
far fewer statements per message, and payments' charges of a batch leave in one SendMessageBatch
(sent by the dispatch pass the batch's commit kicks).
Real PostgreSQL, the SQS endpoint over HTTP, a real Celery worker and the sandbox gateway.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from botocore.client import BaseClient
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from events import topology
from events.consuming.batch import Received, process_batch
from events.consuming.pull import pull_once
from events.consuming.runtime import DUPLICATE, FAILED, HANDLED, POISON, ConsumerRuntime
from events.models import ConsumerFailure, OutboxEvent, ProcessedEvent
from events.signing import signed_attributes
from invoicing.models import BillableAgreement, Invoice, PendingPaymentOutcome
from invoicing.services import invoice_void, invoices_run_inline, projection_apply
from invoicing.tests.factories import agreement_event
from payments.dispatch import charge_kicker
from payments.models import Payment
from payments.services import charges_dispatch, payment_close_for_invoice
from tests.factories import (
    charges_in,
    drain,
    envelope,
    invoice_envelope,
    payment_succeeded_envelope,
    queue_depth,
    send,
    tasks_queued_on,
)
from tests.factories import gateway_stats as stats
from tests.helpers import wait_until

INVOICING = "billing-test-invoicing-events"
PAYMENTS = "billing-test-payments-events"


def received(bodies: list[str]) -> list[Received]:
    return [Received(b, message_id=f"m-{i}", attributes=signed_attributes(b)) for i, b in enumerate(bodies)]


@pytest.fixture
def api_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[tuple[str, str]]]:
    """The AWS API calls botocore's clients make in this process, counted by (operation, queue
    name): every call but the hot ones (ReceiveMessage, DeleteMessageBatch, PublishBatch), which
    events/topology/direct.py makes on a local endpoint."""
    calls: Counter[tuple[str, str]] = Counter()
    real = BaseClient._make_api_call

    def counting(self: Any, operation: str, params: dict[str, Any]) -> Any:
        calls[(operation, str(params.get("QueueUrl", "")).rsplit("/", 1)[-1])] += 1
        return real(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counting)
    yield calls


def sends_to(calls: Counter[tuple[str, str]], queue: str) -> dict[str, int]:
    return {op: n for (op, q), n in calls.items() if q == queue and op.startswith("Send")}


# -- the invoicing projection ---------------------------------------------------------------
@pytest.mark.slow
def test_a_poison_message_in_the_middle_of_a_batch_costs_the_other_nine_nothing(
    transactional_db, empty_queues, sqs
):
    # given a receive batch of ten agreement events, the fifth with an impossible date
    good = [json.dumps(envelope(f"BP-{i}")) for i in range(9)]
    bad = json.dumps(envelope("BP-bad") | {"occurred_at": "2026-13-01T00:00:00Z"})
    send(sqs, [*good[:4], bad, *good[4:]], queue=INVOICING)

    # when invoicing takes it
    result = pull_once("invoicing", batch_size=10)

    # then the nine are projected, together (one processed-event insert), and deleted
    assert result.received == 10 and result.outcomes == {HANDLED: 9, POISON: 1}
    assert sorted(BillableAgreement.objects.values_list("agreement_id", flat=True)) == [
        f"BP-{i}" for i in range(9)
    ]
    assert ProcessedEvent.objects.filter(consumer="invoicing").values("processed_at").distinct().count() == 1
    assert queue_depth(sqs, INVOICING) == 0
    # and the poison one is in the DLQ at once, with its reason
    [dead] = drain(sqs, INVOICING + "-dlq")
    assert json.loads(dead["Body"])["aggregate_id"] == "BP-bad"
    assert "not a valid datetime" in dead["MessageAttributes"]["error"]["StringValue"]
    assert ConsumerFailure.objects.get(consumer="invoicing").poisoned


@pytest.mark.slow
def test_the_same_event_twice_in_a_batch_is_applied_once_and_two_events_of_one_agreement_both_count(
    transactional_db, empty_queues, sqs
):
    # given one batch: an agreement created and cancelled, the creation delivered twice, and
    # an event id reused with other data
    created = envelope("BD-1", version=1)
    cancelled = envelope("BD-1", type="agreement.cancelled", version=2)
    cancelled["data"] = {"agreement_id": "BD-1", "effective_date": "2026-06-30", "at_period_end": False}
    reused = envelope("BD-2") | {"id": created["id"]}
    bodies = [json.dumps(e) for e in (created, cancelled, created, reused)]
    send(sqs, bodies, queue=INVOICING)

    # when invoicing takes it
    result = pull_once("invoicing", batch_size=10)

    # then the creation is applied once, the cancel too, the repeat acknowledged, the reuse refused
    assert result.received == 4 and result.outcomes == {HANDLED: 2, DUPLICATE: 1, POISON: 1}
    row = BillableAgreement.objects.get()
    assert row.agreement_id == "BD-1" and row.created_seen
    assert row.prices == [["2026-01-31", 1999, 1]] and row.cancellations == [[2, "2026-06-30"]]
    assert ProcessedEvent.objects.filter(consumer="invoicing").count() == 2
    [dead] = drain(sqs, INVOICING + "-dlq")
    assert "event id reused with different data" in dead["MessageAttributes"]["error"]["StringValue"]
    assert queue_depth(sqs, INVOICING) == 0


@pytest.mark.slow
def test_a_batch_whose_handler_fails_for_one_message_falls_back_and_the_others_are_handled(
    settings, transactional_db, empty_queues, sqs
):
    # given agreement BF-3's projection row locked by someone else (an operator's long transaction)
    settings.CONSUMER_HANDLER_TIMEOUT_SECONDS = 0.5
    BillableAgreement.objects.create(agreement_id="BF-3")
    locked, release = threading.Event(), threading.Event()

    def hold_the_row() -> None:
        try:
            with transaction.atomic():
                BillableAgreement.objects.select_for_update().get(agreement_id="BF-3")
                locked.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    assert locked.wait(10)
    try:
        # when a batch of ten, one of them about BF-3, is taken
        send(sqs, [json.dumps(envelope(f"BF-{i}")) for i in range(10)], queue=INVOICING)
        result = pull_once("invoicing", batch_size=10)
    finally:
        release.set()
        holder.join()

    # then the nine others are projected and deleted; BF-3 failed on its own and will come back
    assert result.received == 10 and result.outcomes == {HANDLED: 9, FAILED: 1}
    assert set(
        BillableAgreement.objects.filter(created_seen=True).values_list("agreement_id", flat=True)
    ) == {f"BF-{i}" for i in range(10) if i != 3}
    [failure] = ConsumerFailure.objects.filter(consumer="invoicing")
    assert failure.aggregate_id == "BF-3" and "timeout" in failure.last_error and not failure.poisoned
    assert queue_depth(sqs, INVOICING) == 1  # the failed one, back after its retry delay
    # and once the lock is gone, it is handled like any other
    wait_until(lambda: pull_once("invoicing").outcomes.get(HANDLED) == 1, timeout=30)
    assert BillableAgreement.objects.filter(created_seen=True).count() == 10


@pytest.mark.django_db(transaction=True)  # the runtime's transaction is the outermost, as in a worker
def test_a_batch_of_ten_takes_a_fraction_of_the_statements_of_ten_single_messages():
    runtime = ConsumerRuntime("invoicing")
    singles = [json.dumps(envelope(f"SQ-1-{i}")) for i in range(10)]
    batch = [json.dumps(envelope(f"SQ-2-{i}")) for i in range(10)]

    with CaptureQueriesContext(connection) as one_at_a_time:
        outcomes = [runtime.process(m.body, attributes=m.attributes).result for m in received(singles)]
    with CaptureQueriesContext(connection) as together:
        outcomes += [o.result for o in process_batch(runtime, received(batch))]

    assert outcomes == [HANDLED] * 20
    assert BillableAgreement.objects.filter(created_seen=True).count() == 20
    # BEGIN, the timeout with the processed-event insert (one round trip), one insert of the new
    # agreements' rows, COMMIT
    assert len(together) <= 4, [q["sql"][:80] for q in together.captured_queries]
    # where one message at a time took that many per message
    assert len(one_at_a_time) >= 10 * len(together)


# -- invoicing's payment.succeeded ----------------------------------------------------------
@pytest.mark.django_db(transaction=True)  # the runtime's transaction is the outermost, as in a worker
def test_a_batch_of_payments_succeeded_pays_each_invoice_once_in_one_transaction():
    # given four issued invoices, one of them voided, and an invoice not issued yet
    for n in range(4):
        projection_apply(event=agreement_event("agreement.created", f"BPS-{n}", 1, start_date="2026-01-01"))
    invoices_run_inline(run_date=date(2026, 1, 1))
    open_ones = [str(i) for i in Invoice.objects.order_by("agreement_id").values_list("id", flat=True)]
    voided = open_ones.pop()
    invoice_void(invoice_id=voided, reason="issued in error")
    unknown = str(uuid.uuid4())
    versions_before = dict(Invoice.objects.values_list("id", "aggregate_version"))
    first = json.dumps(payment_succeeded_envelope(open_ones[0], "pay-0"))
    bodies = [
        first,
        json.dumps(payment_succeeded_envelope(open_ones[1], "pay-1")),
        first,  # the same event twice in one receive batch
        json.dumps(payment_succeeded_envelope(open_ones[2], "pay-2")),
        json.dumps(payment_succeeded_envelope(open_ones[2], "pay-2")),  # a re-send under a new event id
        json.dumps(payment_succeeded_envelope(voided, "pay-3")),
        json.dumps(payment_succeeded_envelope(unknown, "pay-4")),
    ]

    # when they come in one receive batch
    with CaptureQueriesContext(connection) as queries:
        outcomes = process_batch(ConsumerRuntime("invoicing"), received(bodies))

    # then every open invoice is paid by its payment, with one invoice.paid each; the void one
    # stays void (payments refunds it); the unknown one's outcome is kept for when it is issued
    assert [o.result for o in outcomes] == [HANDLED, HANDLED, DUPLICATE, HANDLED, HANDLED, HANDLED, HANDLED]
    assert dict(Invoice.objects.values_list("id", "status")) == {
        **{uuid.UUID(i): "paid" for i in open_ones},
        uuid.UUID(voided): "void",
    }
    assert dict(Invoice.objects.filter(status="paid").values_list("id", "payment_id")) == {
        uuid.UUID(i): f"pay-{n}" for n, i in enumerate(open_ones)
    }
    paid_events = Counter(
        OutboxEvent.objects.filter(type="invoice.paid").values_list("aggregate_id", flat=True)
    )
    assert paid_events == Counter(open_ones)
    # each paid invoice moved one version on, stored with its paid_at, and its event carries that
    # version (the one paid twice in the batch too)
    for row in OutboxEvent.objects.filter(type="invoice.paid"):
        invoice = Invoice.objects.get(pk=row.aggregate_id)
        assert invoice.aggregate_version == versions_before[invoice.id] + 1 == row.aggregate_version
        assert invoice.paid_at is not None and row.data["paid_at"] == invoice.paid_at.isoformat()
    assert PendingPaymentOutcome.objects.filter(invoice_id=unknown, outcome="paid").count() == 1
    # and all of it in one transaction, the paid invoices written by one statement
    sqls = [q["sql"] for q in queries.captured_queries]
    assert sqls.count("COMMIT") == 1, [q[:80] for q in sqls]
    assert len([q for q in sqls if q.startswith('UPDATE "invoicing_invoice"')]) == 1, [q[:80] for q in sqls]


@pytest.mark.django_db(transaction=True)
def test_a_payment_for_an_invoice_id_invoicing_cannot_have_goes_to_the_dlq_and_the_batch_is_paid(
    caplog: pytest.LogCaptureFixture,
):
    # given two issued invoices, and a payment.succeeded naming an invoice id that is no UUID
    for n in range(2):
        projection_apply(event=agreement_event("agreement.created", f"BPX-{n}", 1, start_date="2026-01-01"))
    invoices_run_inline(run_date=date(2026, 1, 1))
    open_ones = [str(i) for i in Invoice.objects.order_by("agreement_id").values_list("id", flat=True)]
    bodies = [
        json.dumps(payment_succeeded_envelope(open_ones[0], "pay-x0")),
        json.dumps(payment_succeeded_envelope("INV-2026-000001", "pay-bad")),
        json.dumps(payment_succeeded_envelope(open_ones[1], "pay-x1")),
    ]

    # when they come in one receive batch
    with caplog.at_level(logging.INFO, logger="events.consuming"):
        outcomes = process_batch(ConsumerRuntime("invoicing"), received(bodies))

    # then it is refused with its reason (the DLQ, at once), nothing kept for it, and the others paid
    assert [o.result for o in outcomes] == [HANDLED, POISON, HANDLED]
    assert "'INV-2026-000001'" in outcomes[1].reason and "not an invoice of invoicing" in outcomes[1].reason
    [failure] = ConsumerFailure.objects.filter(consumer="invoicing")
    assert failure.poisoned and "not an invoice of invoicing" in failure.last_error
    assert not PendingPaymentOutcome.objects.exists()
    assert set(Invoice.objects.values_list("status", flat=True)) == {"paid"}
    # and the log says a handler refused an event, not that the batch failed with a traceback
    batch_logs = [r for r in caplog.records if r.name == "events.consuming.batch"]
    assert [(r.levelno, r.exc_info) for r in batch_logs] == [(logging.INFO, None)]
    assert "refuses" in batch_logs[0].getMessage() and "INV-2026-000001" in batch_logs[0].getMessage()


# -- payments -----------------------------------------------------------------------------
@pytest.mark.slow
def test_the_charges_of_a_batch_of_invoices_leave_in_one_send_and_are_each_charged_once(
    celery_worker, sandbox, sqs, api_calls
):
    # given ten invoices issued, one of them delivered twice, in one receive batch
    invoices = [invoice_envelope(f"BI-{i}") for i in range(9)]
    send(sqs, [json.dumps(e) for e in [*invoices, invoices[0]]], queue=PAYMENTS)

    # when payments takes it
    kicks = charge_kicker.sent
    result = pull_once("payments", batch_size=10)

    # then nine payments; the consumer's commit kicked one dispatch task, whose pass sent the nine
    # charges to the task queue in one SendMessageBatch
    assert result.received == 10 and result.outcomes == {HANDLED: 9, DUPLICATE: 1}
    assert Payment.objects.count() == 9
    # and the worker charges each invoice once
    wait_until(lambda: Payment.objects.filter(status="succeeded").count() == 9, timeout=60)
    assert stats(sandbox)["charges"] == 9
    assert sends_to(api_calls, topology.task_queue_name("payments")) == {"SendMessageBatch": 1}
    assert charge_kicker.sent == kicks + 1  # the dispatch task (on the default queue)


def test_an_invoice_voided_before_it_was_issued_starts_cancelled_within_a_batch(
    transactional_db, empty_queues, sqs, api_calls, monkeypatch
):
    monkeypatch.setattr(charge_kicker, "enabled", lambda: False)  # the test runs the dispatch pass
    # given invoice BV-2 voided before its invoice.issued arrived
    payment_close_for_invoice(invoice_id="BV-2", reason="voided by a correction")
    bodies = [json.dumps(invoice_envelope(f"BV-{i}")) for i in range(4)]

    # when the four invoice.issued come in one batch
    outcomes = process_batch(ConsumerRuntime("payments"), received(bodies))

    # then BV-2's payment starts cancelled; the three others are due, and a dispatch pass queues
    # their charges (not BV-2's) in one send
    assert [o.result for o in outcomes] == [HANDLED] * 4
    statuses = dict(Payment.objects.values_list("invoice_id", "status"))
    assert statuses == {"BV-0": "pending", "BV-1": "pending", "BV-2": "cancelled", "BV-3": "pending"}
    assert charges_dispatch() == 3
    charged = sorted(p for p, _step in charges_in(tasks_queued_on(sqs, topology.task_queue_name("payments"))))
    assert charged == sorted(
        str(p) for p in Payment.objects.filter(status="pending").values_list("pk", flat=True)
    ), {str(p.pk): p.status for p in Payment.objects.all()}
    assert sends_to(api_calls, topology.task_queue_name("payments"))["SendMessageBatch"] == 1


def test_an_invoice_voided_ahead_of_its_issue_in_one_batch_is_never_queued_for_a_charge(
    transactional_db, empty_queues, sqs, monkeypatch
):
    # given a worker that dispatches charges as soon as a commit asks (its task runs at once)
    dispatched: list[int] = []
    monkeypatch.setattr(charge_kicker, "request", lambda: dispatched.append(charges_dispatch()))
    # when one receive batch holds BW-1's invoice.voided, then the four invoices' invoice.issued
    voided = invoice_envelope("BW-1", type="invoice.voided")
    voided["data"] = {"invoice_id": "BW-1", "reason": "issued in error"}
    issued = [invoice_envelope(f"BW-{i}") for i in range(4)]
    outcomes = process_batch(
        ConsumerRuntime("payments"), received([json.dumps(e) for e in [voided, *issued]])
    )

    # then the messages are applied in the order received: BW-1's payment starts cancelled, and
    # no charge for it was ever queued (applied the other way round, the batch's commit
    # dispatched it before the void closed the payment: charged, then refunded)
    assert [o.result for o in outcomes] == [HANDLED] * 5
    statuses = dict(Payment.objects.values_list("invoice_id", "status"))
    assert statuses == {"BW-0": "pending", "BW-1": "cancelled", "BW-2": "pending", "BW-3": "pending"}
    charged = sorted(p for p, _step in charges_in(tasks_queued_on(sqs, topology.task_queue_name("payments"))))
    assert sum(dispatched) == 3
    assert charged == sorted(
        str(p) for p in Payment.objects.filter(status="pending").values_list("pk", flat=True)
    )
