"""A consumer's side of SQS: receive, delete, dead-letter with the reason, retry later, settle a batch.

Plain ReceiveMessage/DeleteMessageBatch with boto3 rather than kombu: these are not kombu
messages (raw SNS delivery), and the semantics stay exact: success deletes; a handler failure
leaves the message to come back after a backoff that grows with its receive count, until SQS's
redrive policy moves it to the DLQ; a poison message is copied to the DLQ with its reason, then
deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from core.db import unit_of_work

from .. import signing
from ..operations.observations import observe_receive
from ..topology import aws
from ..topology.aws import BATCH_MAX_ENTRIES
from .batch import Received, process_batch
from .config import ConsumerConfig
from .runtime import FAILED, POISON, ConsumerRuntime, Outcome, process_message

logger = logging.getLogger(__name__)

# Attributes a dead-lettered copy carries (and a redrive strips): why, who, the original's id.
RESERVED_ATTRIBUTES = ("error", "failed_consumer", "original_message_id")


def receive(queue: str, *, max_messages: int, wait_seconds: int) -> list[dict[str, Any]]:
    resp = aws.calls("sqs").receive_message(
        QueueUrl=aws.queue_url(queue),
        MaxNumberOfMessages=max(1, min(BATCH_MAX_ENTRIES, max_messages)),
        WaitTimeSeconds=wait_seconds,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
    )
    messages = list(resp.get("Messages", []))
    observe_receive(queue, messages)
    return messages


def receive_count(message: dict[str, Any]) -> int:
    return int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))


def delete_batch(queue: str, messages: Iterable[dict[str, Any]]) -> None:
    messages = list(messages)
    sqs = aws.calls("sqs")
    for i in range(0, len(messages), BATCH_MAX_ENTRIES):
        chunk = messages[i : i + BATCH_MAX_ENTRIES]
        resp = sqs.delete_message_batch(
            QueueUrl=aws.queue_url(queue),
            Entries=[{"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(chunk)],
        )
        for failed in resp.get("Failed", []):
            # The message comes back after its visibility timeout; idempotency absorbs it.
            logger.warning("could not delete message from %s: %s", queue, failed)


def dead_letter(cfg: ConsumerConfig, poisoned: list[tuple[dict[str, Any], str]]) -> None:
    """Copy poison messages to the consumer's DLQ with their reasons, then delete the originals.

    Send before delete: a crash in between leaves a copy in both (never none). Batched
    (SendMessageBatch, then one DeleteMessageBatch): a batch full of poison settles in two
    calls, well inside the visibility timeout. An entry the DLQ refused is not deleted; it
    comes back and, past maxReceiveCount, SQS's own redrive moves it.
    """
    sqs = aws.client("sqs")
    entries = [(message, _dlq_attributes(cfg, message, reason)) for message, reason in poisoned]
    for group in aws.size_batches(entries, _entry_size):
        resp = sqs.send_message_batch(
            QueueUrl=aws.queue_url(cfg.dlq),
            Entries=[
                {"Id": str(i), "MessageBody": m["Body"] or "(empty body)", "MessageAttributes": attrs}
                for i, (m, attrs) in enumerate(group)
            ],
        )
        failed, copied = aws.batch_answer(resp, len(group), "SendMessageBatch")
        for i, why in failed.items():
            logger.warning(
                "DLQ %s refused a poison message, left for redrive: %s: %s",
                cfg.dlq,
                group[i][0].get("MessageId"),
                why,
            )
        delete_batch(cfg.queue, [group[i][0] for i in sorted(copied)])  # only what has its copy


# SQS takes at most 10 attributes a message; ours (the event's: event_type, producer, signature,
# signature_key, replayed) are kept first, so a redrive still finds the message signed.
MAX_MESSAGE_ATTRIBUTES = 10
_OURS_FIRST = ("event_type", "producer", signing.SIGNATURE, signing.SIGNATURE_KEY, "replayed")


def _dlq_attributes(cfg: ConsumerConfig, message: dict[str, Any], reason: str) -> dict[str, Any]:
    """The message's own attributes and the three that say why it is here. A message that came
    with more than the room left (forged, or another sender's) keeps ours and the first others by
    name; the reason names those left out (else the DLQ refused the copy, and the message came back
    until SQS moved it with no reason at all)."""
    given = {k: v for k, v in message.get("MessageAttributes", {}).items() if k not in RESERVED_ATTRIBUTES}
    names = [k for k in _OURS_FIRST if k in given] + sorted(k for k in given if k not in _OURS_FIRST)
    room = MAX_MESSAGE_ATTRIBUTES - len(RESERVED_ATTRIBUTES)
    attributes = {k: given[k] for k in names[:room]}
    note = ""
    if names[room:]:
        note = (
            f" (attributes left out, SQS takes {MAX_MESSAGE_ATTRIBUTES}: {', '.join(names[room:])}"[:300]
            + ")"
        )
    error = (reason or "rejected")[: 1000 - len(note)] + note
    attributes["error"] = {"DataType": "String", "StringValue": error}
    attributes["failed_consumer"] = {"DataType": "String", "StringValue": cfg.name}
    attributes["original_message_id"] = {"DataType": "String", "StringValue": message["MessageId"]}
    return attributes


def _entry_size(entry: tuple[dict[str, Any], dict[str, Any]]) -> int:
    message, attributes = entry
    size = len((message["Body"] or "").encode("utf-8"))
    for name, value in attributes.items():
        size += len(name) + len(value["DataType"])
        size += len(value.get("StringValue", "").encode("utf-8")) + len(value.get("BinaryValue", b""))
    return size


def retry_later(cfg: ConsumerConfig, message: dict[str, Any]) -> None:
    """Make a failed message visible again after a backoff that grows with its receive count."""
    delay = ConsumerRuntime(cfg.name).retry_delay(receive_count(message))
    try:
        aws.client("sqs").change_message_visibility(
            QueueUrl=aws.queue_url(cfg.queue),
            ReceiptHandle=message["ReceiptHandle"],
            VisibilityTimeout=int(delay),
        )
    except Exception as exc:  # noqa: BLE001 - it comes back after the queue's visibility timeout anyway
        logger.warning("could not set the retry delay of %s: %s", message.get("MessageId"), exc)


def handle_one(cfg: ConsumerConfig, message: dict[str, Any]) -> Outcome:
    """Process one received message. Never raises: whatever goes wrong is an outcome, so one
    bad message never costs the others of its batch their settlement."""
    try:
        with unit_of_work():
            return process_message(
                cfg.name,
                message.get("Body", ""),
                message_id=message.get("MessageId", ""),
                receive_count=receive_count(message),
                attributes=message.get("MessageAttributes", {}),
            )
    except Exception as exc:  # noqa: BLE001 - process_message never raises; a lost connection might
        logger.exception("consumer %s: message %s could not be processed", cfg.name, message.get("MessageId"))
        return Outcome(FAILED, reason=f"{type(exc).__name__}: {exc}"[:2000])


def handle_batch(cfg: ConsumerConfig, messages: list[dict[str, Any]]) -> list[Outcome]:
    """Process one receive batch of a consumer whose handlers take batches (events/consuming/batch.py):
    one outcome per message, in order. Never raises."""
    try:
        with unit_of_work():
            return process_batch(ConsumerRuntime(cfg.name), [_received(m) for m in messages])
    except Exception as exc:  # noqa: BLE001 - process_batch never raises; a lost connection might
        logger.exception("consumer %s: a batch of %d could not be processed", cfg.name, len(messages))
        return [Outcome(FAILED, reason=f"{type(exc).__name__}: {exc}"[:2000]) for _ in messages]


def _received(message: dict[str, Any]) -> Received:
    return Received(
        message.get("Body", ""),
        message_id=message.get("MessageId", ""),
        receive_count=receive_count(message),
        attributes=message.get("MessageAttributes", {}),
    )


def settle(cfg: ConsumerConfig, done: list[tuple[dict[str, Any], Outcome]]) -> None:
    """Delete what is done, dead-letter poison, back off failures."""
    delete_batch(cfg.queue, [m for m, o in done if o.delete])
    poisoned = [(m, o.reason) for m, o in done if o.result == POISON]
    if poisoned:
        dead_letter(cfg, poisoned)
    for message, outcome in done:
        if outcome.result != POISON and not outcome.delete:
            retry_later(cfg, message)
