"""A poison message's copy in the DLQ says why it is there, whatever the sender put on it."""

from __future__ import annotations

import json

from events.consuming.config import consumer_configs
from events.consuming.sqs import dead_letter
from events.signing import signed_attributes
from events.topology import aws
from tests.auditapp import consumers as audit
from tests.factories import AUDIT_QUEUE, OddSendAnswer, drain, envelope, send
from tests.factories import queue_depth as queue_counts
from tests.helpers import wait_until


def test_a_poison_message_carrying_nine_attributes_of_its_own_is_dead_lettered_at_once_with_its_reason(
    audit_consumer, sqs
):
    # given a forged event (its data off the contract) sent with the two signing attributes and
    # eight more of the sender's own: ten, the most SQS takes, and the DLQ copy adds three
    body = json.dumps(envelope("FORGED", currency="eur"))
    extra = {f"x-{i}": {"DataType": "String", "StringValue": str(i)} for i in range(8)}
    attributes = signed_attributes(body) | extra
    sqs.send_message(QueueUrl=aws.queue_url(AUDIT_QUEUE), MessageBody=body, MessageAttributes=attributes)

    # then it lands in the DLQ on its first receive, its reason on it, signed as it came
    wait_until(lambda: queue_counts(sqs, AUDIT_QUEUE + "-dlq") == 1, timeout=30)
    [dead] = drain(sqs, AUDIT_QUEUE + "-dlq")
    attrs = dead["MessageAttributes"]
    assert len(attrs) == 10
    assert attrs["error"]["StringValue"] == (
        "agreement.created v2: data.currency must match pattern ^[A-Z]{3}$ "
        "(attributes left out, SQS takes 10: x-5, x-6, x-7)"
    )
    assert attrs["failed_consumer"]["StringValue"] == "audit"
    assert {"signature", "signature_key", "x-0", "x-4"} <= set(attrs)
    assert dead["Body"] == body
    assert queue_counts(sqs, AUDIT_QUEUE) == 0 and audit.attempts["FORGED"] == 0


def test_a_poison_message_whose_dlq_copy_is_not_confirmed_stays_in_its_queue(
    transactional_db, empty_queues, sqs, monkeypatch
):
    # given a poison message taken from its queue (briefly: visible again a second later)
    body = json.dumps(envelope("FORGED", currency="eur"))
    send(sqs, [body])
    url = aws.queue_url(AUDIT_QUEUE)
    [message] = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1, WaitTimeSeconds=1)["Messages"]
    # when it is dead-lettered and the DLQ's answer does not say for sure that it took the copy
    client = aws.client
    monkeypatch.setattr(aws, "client", lambda service: OddSendAnswer(client(service), "both"))
    dead_letter(consumer_configs()["audit"], [(message, "off its contract")])
    monkeypatch.undo()

    # then the original is not deleted: it comes back, to be dead-lettered again (never lost)
    again = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=3).get("Messages", [])
    assert [m["Body"] for m in again] == [body]
