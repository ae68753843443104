"""Outbox rows to SNS: their message attributes, PublishBatch-sized groups, and the calls.

The relay (relay_pass.py) publishes through ``publish_all``, several calls in flight; a replay
(replay.py) and the delivery audit's re-send (events/audit/backfill.py) group and sign rows the
same way. Every message carries ``event_type`` and ``producer`` (what subscriptions filter on)
and the signature of its body (events/signing.py); a replayed one says so.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import BotoCoreError
from django.conf import settings

from core.per_process import PerProcess

from .. import signing
from ..models import OutboxEvent
from ..topology import aws


def message_attributes(row: OutboxEvent, *, replayed: bool = False) -> dict[str, dict[str, str]]:
    """What SNS subscriptions filter on, and the signature that authenticates the body."""
    attrs = {
        "event_type": {"DataType": "String", "StringValue": row.type},
        "producer": {"DataType": "String", "StringValue": row.producer},
        **signing.signed_attributes(row.message_body()),
    }
    if replayed:
        attrs["replayed"] = {"DataType": "String", "StringValue": "true"}
    return attrs


def batches(rows: list[OutboxEvent]) -> list[list[OutboxEvent]]:
    """Groups of at most 10 rows and at most 250 KiB of message bodies (PublishBatch's caps)."""
    return aws.size_batches(rows, lambda row: len(row.message_body().encode("utf-8")) + 200)


def publish_batch(topic: str, rows: list[OutboxEvent], *, replayed: bool = False) -> dict[str, str]:
    """PublishBatch up to 10 rows to ``topic``; returns {row id: error} for failures.

    Raises on a call-level failure (endpoint down): then every row failed.
    """
    entries = [
        {
            "Id": str(i),
            "Message": row.message_body(),
            "MessageAttributes": message_attributes(row, replayed=replayed),
        }
        for i, row in enumerate(rows)
    ]
    resp = aws.calls("sns").publish_batch(TopicArn=aws.topic_arn(topic), PublishBatchRequestEntries=entries)
    failed, sent = aws.batch_answer(resp, len(rows), "PublishBatch")
    for i, ok in sent.items():
        rows[i].sns_message_id = ok.get("MessageId", "")
    return {str(rows[i].id): why for i, why in failed.items()}


# This process's publishing threads (a forked child makes its own: core/per_process.py).
_publisher = PerProcess(
    lambda: ThreadPoolExecutor(settings.OUTBOX_RELAY_PUBLISH_CONCURRENCY, "outbox-relay-publish")
)


# What publish_all says of a row whose call it did not start: the pass ran out of its publishing
# time (``publish_seconds``). Not a failure: the row is left as it was, due, for the next pass.
NOT_SENT = "not sent: the pass ran out of its publishing time"


# What a relay task keeps in hand after its last call for its last mark, commit, unlock and look.
RELAY_END_MARGIN_SECONDS = 5.0


def task_publish_seconds() -> float:
    """How long a relay pass may start calls for so that a relay task ends before its soft time
    limit even when every call takes the longest a call may: its passes start until
    OUTBOX_RELAY_MAX_SECONDS (a hold's wait ends by then too), and the last call started may take
    ``aws.longest_call_seconds``. (Stopped by the limit mid-pass, a relay publishes its rows again
    on the next pass, and its task fails.) Where the settings leave less than
    ``MIN_PUBLISH_SECONDS``, no bound would keep a relay in time (any call could outlast it): none
    is applied, and system check billing.W013 says so."""
    return (
        settings.CELERY_TASK_SOFT_TIME_LIMIT
        - settings.OUTBOX_RELAY_MAX_SECONDS
        - aws.longest_call_seconds()
        - RELAY_END_MARGIN_SECONDS
    )


# The least a relay pass may publish for by the bounds above (a shorter bound is not applied), and
# a hold wait for (events/checks.py).
MIN_PUBLISH_SECONDS = 5.0


def publish_seconds() -> float | None:
    """How long a relay pass may go on starting calls (None: no limit). Its transaction waits
    idle while it publishes, and the server ends a relay's session idle
    OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS (relay.py): the last call started may take the longest a call
    takes, and half of what is left is kept in hand (the lock's session waits for a lane's pass).
    And the relay's task must end before its soft time limit (``task_publish_seconds``)."""
    bounds: list[float] = []
    if (in_task := task_publish_seconds()) >= MIN_PUBLISH_SECONDS:
        bounds.append(in_task)
    idle = settings.OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS
    if idle > 0:
        bounds.append((idle - aws.longest_call_seconds()) / 2)
    # (at least a second, whatever the settings: a pass that could start no call would spin)
    return max(1.0, min(bounds)) if bounds else None


def publish_all(
    chunks: list[tuple[str, list[OutboxEvent]]], *, relay_deadline: float | None = None
) -> dict[str, str]:
    """Publish every chunk, several calls in flight; {row id: error} for the rows that failed.

    A failed call fails all of its rows. Once a call finds the endpoint unreachable, the chunks
    not yet sent fail at once with the same error rather than hammering it; the rows' backoff
    spaces the retries. Chunks whose call would start past ``publish_seconds`` are not sent: their
    rows say ``NOT_SENT``; nor, for a relay's pass that started after ``relay_deadline`` (the time
    its passes may start until: a look at the queues' depths took long), past that deadline's
    ``task_publish_seconds``."""
    unreachable: list[str] = []
    # From now: the pass's transaction is idle from here, a chunk's wait for a thread included
    # (another lane's calls may hold them all)
    budget = publish_seconds()
    deadline = None if budget is None else time.monotonic() + budget
    if relay_deadline is not None and (in_task := task_publish_seconds()) >= MIN_PUBLISH_SECONDS:
        latest = relay_deadline + in_task  # (the task bound applies: so does ``budget``'s, never None)
        deadline = latest if deadline is None else min(deadline, latest)

    def publish(topic: str, chunk: list[OutboxEvent]) -> dict[str, str]:
        if unreachable:
            return {str(r.id): unreachable[0] for r in chunk}
        if deadline is not None and time.monotonic() > deadline:
            return {str(r.id): NOT_SENT for r in chunk}
        try:
            return publish_batch(topic, chunk)
        except Exception as exc:  # noqa: BLE001 - one bad chunk must not stall the others
            error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, BotoCoreError):
                unreachable.append(error)
            return {str(r.id): error for r in chunk}

    if len(chunks) == 1:  # in this thread, at once
        return publish(*chunks[0])
    failures: dict[str, str] = {}
    for failed in _publisher.get().map(lambda c: publish(*c), chunks):
        failures.update(failed)
    return failures
