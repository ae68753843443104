"""Test data and delivery helpers shared by every app's tests (no test module imports another).

Messages sent straight to a consumer queue are signed like the relay signs them
(events/signing.py); a test about unsigned or forged messages builds its own.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
import uuid
from datetime import datetime
from typing import Any

from django.db import transaction

from events import contracts
from events.consuming import Event
from events.consuming.runtime import Outcome, process_message
from events.operations.alerts import record_alert
from events.publishing import NewEvent, record_events, sns
from events.signing import signed_attributes
from events.topology import aws
from payments.models import Payment

AUDIT_QUEUE = "billing-test-audit-events"


def agreement_data(agreement_id: str = "A-1", *, schema_version: int = 2, **overrides: Any) -> dict[str, Any]:
    """The data of an ``agreement.created`` event, as the agreements context records it (version 2,
    naming the agreement as ``SUB-<id>``), or as it did before (``schema_version=1``: no ref)."""
    data = {
        "agreement_id": agreement_id,
        "external_ref": f"SUB-{agreement_id}",
        "customer": {"external_ref": "C-1", "name": "Ada", "email": "ada@example.com"},
        "description": "Monthly plan",
        "amount_minor": 1999,
        "currency": "EUR",
        "interval": "month",
        "interval_count": 1,
        "start_date": "2026-01-31",
        "end_date": None,
        "status": "active",
    }
    if schema_version == 1:
        del data["external_ref"]
    data.update(overrides)
    return data


def record_an_alert() -> None:
    """Commit one ``alert.refund_failed`` (aggregate ``refund_failed:r-1``), as payments raises it."""
    with transaction.atomic():
        record_alert(
            sender=None,
            check="refund_failed",
            about="r-1",
            severity="critical",
            summary="the gateway refused a refund",
            details={},
        )


def record_agreements_created(n: int, prefix: str) -> None:
    """Commit ``n`` agreement.created events (aggregates ``{prefix}-0``...) in one transaction."""
    with transaction.atomic():
        record_events(
            sender=None,
            events=[
                NewEvent(contracts.AGREEMENT_CREATED, f"{prefix}-{i}", 1, agreement_data(f"{prefix}-{i}"))
                for i in range(n)
            ],
        )


def invoice_data(customer: str = "cus-ok", invoice_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The data of an ``invoice.issued`` event, as the invoicing context records it."""
    invoice_id = invoice_id or str(uuid.uuid4())
    data = {
        "invoice_id": invoice_id,
        "number": f"INV-T-{invoice_id[:6]}",
        "agreement_id": "A-1",
        "customer": {"external_ref": customer, "name": "Ada", "email": "ada@example.com"},
        "period_start": "2026-01-01",
        "period_end": "2026-02-01",
        "total_minor": 1500,
        "currency": "EUR",
        "due_date": "2026-01-15",
    }
    data.update(overrides)
    return data


def envelope(
    aggregate_id: str,
    *,
    type: str = "agreement.created",
    event_id: str | None = None,
    version: int = 1,
    schema_version: int | None = None,
    **data_overrides: Any,
) -> dict[str, Any]:
    """An agreement event's envelope as the relay publishes it (the type's current schema_version
    unless given: ``schema_version=1`` is an ``agreement.created`` recorded before v2)."""
    known = contracts.REGISTRY.get(type)
    schema_version = schema_version or (known.schema_version if known else 1)
    return {
        "id": event_id or str(uuid.uuid4()),
        "type": type,
        "schema_version": schema_version,
        "occurred_at": "2026-11-27T10:00:00Z",
        "producer": "agreements",
        "aggregate_type": "agreement",
        "aggregate_id": aggregate_id,
        "aggregate_version": version,
        "data": agreement_data(aggregate_id, schema_version=schema_version, **data_overrides),
    }


def invoice_envelope(invoice_id: str, *, type: str = "invoice.issued", **data: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": type,
        "schema_version": 1,
        "occurred_at": "2026-11-27T10:00:00Z",
        "producer": "invoicing",
        "aggregate_type": "invoice",
        "aggregate_id": invoice_id,
        "aggregate_version": 1,
        "data": invoice_data(invoice_id=invoice_id, **data) if type == "invoice.issued" else data,
    }


def payment_succeeded_envelope(invoice_id: str, payment_id: str, amount_minor: int = 1000) -> dict[str, Any]:
    """A ``payment.succeeded`` of ``payment_id`` for ``invoice_id``, as payments publishes it."""
    return {
        **invoice_envelope(invoice_id, type="payment.succeeded"),
        "producer": "payments",
        "aggregate_type": "payment",
        "aggregate_id": payment_id,
        "data": {
            "payment_id": payment_id,
            "invoice_id": invoice_id,
            "amount_minor": amount_minor,
            "currency": "EUR",
            "gateway_reference": "ch_1",
        },
    }


def event_from_row(row: Any) -> Event:
    """The Event a consumer's handler would get for this outbox row (delivery itself skipped)."""
    return Event(
        id=row.id,
        type=row.type,
        schema_version=row.schema_version,
        occurred_at=row.occurred_at,
        producer=row.producer,
        aggregate_type=row.aggregate_type,
        aggregate_id=row.aggregate_id,
        aggregate_version=row.aggregate_version,
        data=row.data,
    )


def deliver(consumer: str, body: str | bytes, **kwargs: Any) -> Outcome:
    """``process_message`` with the body signed as the relay signs it."""
    return process_message(consumer, body, attributes=signed_attributes(body), **kwargs)


def send(sqs: Any, bodies: list[str], queue: str = AUDIT_QUEUE) -> None:
    """Put signed messages straight into a queue, as SNS raw delivery would (10 per call)."""
    url = aws.queue_url(queue)
    for i in range(0, len(bodies), 10):
        resp = sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(j), "MessageBody": b, "MessageAttributes": signed_attributes(b)}
                for j, b in enumerate(bodies[i : i + 10])
            ],
        )
        assert not resp.get("Failed"), resp


def drain(sqs: Any, queue: str, wait: int = 1) -> list[dict[str, Any]]:
    """Receive and delete everything in ``queue``; the messages, with their attributes."""
    url = aws.queue_url(queue)
    got: list[dict[str, Any]] = []
    while True:
        msgs = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not msgs:
            return got
        got.extend(msgs)
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
        )


def tasks_queued_on(sqs: Any, queue: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """The Celery tasks waiting on ``queue`` (taken off it): (name, kwargs, headers) each."""
    tasks = []
    for m in drain(sqs, queue, wait=1):
        message = json.loads(base64.b64decode(m["Body"]))
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        tasks.append((message["headers"]["task"], kwargs, message["headers"]))
    return tasks


def charges_in(tasks: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> list[tuple[str, int]]:
    """The (payment id, dunning step) of each charge in these tasks, one a message or several."""
    charges: list[tuple[str, int]] = []
    for name, kwargs, _headers in tasks:
        if name == "payments.charge_payment":
            charges.append((kwargs["payment_id"], kwargs["step"]))
        elif name == "payments.charge_payments":
            charges += [(p, step) for p, step in kwargs["charges"]]
    return charges


def queue_depth(sqs: Any, queue: str) -> int:
    """Visible plus in-flight messages of ``queue``."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=aws.queue_url(queue),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def gateway_stats(server: Any) -> dict[str, Any]:
    """The sandbox gateway's own counters (charges, refunds, per key)."""
    with urllib.request.urlopen(f"{server.url}/v1/_stats") as resp:
        return dict(json.load(resp))


def body(envelope_dict: dict[str, Any]) -> str:
    """The envelope serialized as the relay sends it (sorted keys, compact)."""
    return json.dumps(envelope_dict, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def payments_create(n: int, status: str, next_attempt_at: datetime | None = None) -> None:
    """``n`` payments in ``status`` (one invoice each), in one INSERT."""
    Payment.objects.bulk_create(
        Payment(
            id=uuid.uuid4(),
            invoice_id=f"inv-{uuid.uuid4()}",
            invoice_number="INV-1",
            customer_ref="C-1",
            customer_email="c@example.com",
            amount_minor=1500,
            currency="EUR",
            status=status,
            next_attempt_at=next_attempt_at,
        )
        for _ in range(n)
    )


class SqsAnswering:
    """The SQS client, every call passed through: a subclass changes the answers of the calls it
    defines (the far side of the world misbehaving)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


class OddSendAnswer(SqsAnswering):
    """The SQS client, but SendMessageBatch's answer is odd about the batch's first entry (sent):
    ``left-out`` lists it neither as sent nor as failed, ``both`` lists it as both (an odd answer
    from an emulator or a proxy): whether the queue holds that copy is unknown."""

    def __init__(self, client: Any, odd: str) -> None:
        super().__init__(client)
        self.odd = odd

    def send_message_batch(self, **request: Any) -> dict[str, Any]:
        answer = self.client.send_message_batch(**request)
        if self.odd == "left-out":
            return {
                key: [e for e in answer.get(key, []) if e["Id"] != "0"] for key in ("Successful", "Failed")
            }
        answer.setdefault("Failed", []).append({"Id": "0", "Code": "InternalError", "Message": "and yet"})
        return answer


class DeletesRefused(SqsAnswering):
    """The SQS client, but DeleteMessageBatch leaves each batch's first entry in its queue and
    answers it failed (as SQS does for an expired receipt handle or a throttled entry)."""

    def delete_message_batch(self, **request: Any) -> dict[str, Any]:
        first, *rest = request["Entries"]
        answer: dict[str, Any] = {"Successful": [], "Failed": []}
        if rest:
            answer = self.client.delete_message_batch(**{**request, "Entries": rest})
        answer.setdefault("Failed", []).append(
            {"Id": first["Id"], "Code": "ReceiptHandleIsInvalid", "Message": "refused", "SenderFault": True}
        )
        return answer


def slow_publishing(monkeypatch: Any, *, each_call: float) -> list[str]:
    """The relay's PublishBatch answered ``each_call`` s late (a slow endpoint); the ids of the rows
    sent, as they go."""
    sent: list[str] = []
    publish_batch = sns.publish_batch

    def slow(topic: str, rows: list[Any], **kw: Any) -> dict[str, str]:
        time.sleep(each_call)
        sent.extend(str(r.id) for r in rows)
        return publish_batch(topic, rows, **kw)

    monkeypatch.setattr(sns, "publish_batch", slow)
    return sent
