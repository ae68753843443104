"""Dead-letter queue tools: inspect without consuming, redrive selectively back to the source.

Redrive copies with SendMessageBatch, then deletes with DeleteMessageBatch:
killed midway, a message may end up in both queues (idempotent consumers
absorb the duplicate), never in neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .. import topology
from ..envelope import Poison, parse_envelope
from ..models import ConsumerFailure
from ..topology import aws
from ..topology.aws import BATCH_MAX_ENTRIES
from .sqs import RESERVED_ATTRIBUTES


class DlqError(ValueError):
    pass


def resolve(name: str) -> tuple[str, str]:
    """(dlq, source) full names for a consumer name, a source queue name or a DLQ name."""
    topo = topology.build()
    try:
        spec = topo.queue(name)
    except KeyError:
        known = ", ".join(q.consumer for q in topo.queues)
        raise DlqError(f"no queue {name!r}; give a consumer ({known}) or a full queue name") from None
    return spec.dlq_name, spec.name


@dataclass
class DlqMessage:
    message_id: str
    receipt: str
    body: str
    event_type: str
    aggregate: str
    receive_count: int
    age_seconds: float
    error: str
    attributes: dict[str, Any]


def _describe(msg: dict[str, Any], *, with_error: bool = True) -> DlqMessage:
    attrs = msg.get("MessageAttributes", {})
    event_type, aggregate = attrs.get("event_type", {}).get("StringValue", ""), ""
    try:
        env = parse_envelope(msg["Body"])
        event_type = env["type"]
        aggregate = f"{env['aggregate_type']}:{env['aggregate_id']}"
    except Poison:
        event_type = event_type or "(malformed)"
    error = attrs.get("error", {}).get("StringValue", "")
    if not error and with_error:
        original = attrs.get("original_message_id", {}).get("StringValue", msg["MessageId"])
        failure = ConsumerFailure.objects.filter(message_id=original).order_by("first_seen_at").first()
        error = failure.first_error if failure else ""
    sent = int(msg.get("Attributes", {}).get("SentTimestamp", time.time() * 1000)) / 1000
    return DlqMessage(
        message_id=msg["MessageId"],
        receipt=msg["ReceiptHandle"],
        body=msg["Body"],
        event_type=event_type,
        aggregate=aggregate,
        receive_count=int(msg.get("Attributes", {}).get("ApproximateReceiveCount", 0)),
        age_seconds=time.time() - sent,
        error=error,
        attributes=attrs,
    )


def _receive(queue: str, hold_seconds: int) -> list[dict[str, Any]]:
    return list(
        aws.client("sqs")
        .receive_message(
            QueueUrl=aws.queue_url(queue),
            MaxNumberOfMessages=BATCH_MAX_ENTRIES,
            WaitTimeSeconds=1,
            VisibilityTimeout=hold_seconds,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        .get("Messages", [])
    )


def release(queue: str, receipts: list[str]) -> None:
    """Make held messages visible again at once (they were only looked at)."""
    sqs = aws.client("sqs")
    for i in range(0, len(receipts), BATCH_MAX_ENTRIES):
        sqs.change_message_visibility_batch(
            QueueUrl=aws.queue_url(queue),
            Entries=[
                {"Id": str(j), "ReceiptHandle": r, "VisibilityTimeout": 0}
                for j, r in enumerate(receipts[i : i + BATCH_MAX_ENTRIES])
            ],
        )


depth = aws.queue_depth  # a DLQ's messages, visible and in flight


def inspect(dlq: str, *, limit: int = 50) -> list[DlqMessage]:
    """Up to ``limit`` messages of the DLQ, described; all are visible again afterwards."""
    seen: dict[str, DlqMessage] = {}
    held: list[str] = []
    try:
        while len(seen) < limit:
            batch = _receive(dlq, hold_seconds=60)
            if not batch:
                break
            for m in batch:
                held.append(m["ReceiptHandle"])
                seen.setdefault(m["MessageId"], _describe(m))
    finally:
        release(dlq, held)
    return sorted(seen.values(), key=lambda m: -m.age_seconds)[:limit]


@dataclass
class Selection:
    event_type: str | None = None
    aggregate_id: str | None = None
    older_than: timedelta | None = None

    def matches(self, m: DlqMessage) -> bool:
        if self.event_type and m.event_type != self.event_type:
            return False
        if self.aggregate_id and m.aggregate.split(":", 1)[-1] != self.aggregate_id:
            return False
        if self.older_than and m.age_seconds < self.older_than.total_seconds():
            return False
        return True


@dataclass
class RedriveReport:
    """What a redrive did and what it left, from a pass that looks at every message once.

    ``left_*`` count what stays in the DLQ: selected ones not moved (a send failed, ``--max``
    reached), unselected ones, and ``unexamined``: in the DLQ at the end but never received
    (in flight elsewhere during the run, or arrived after it started). ``copied_not_deleted`` stay
    in it too, with a copy in the source queue (``sent`` counts both kinds).
    """

    depth_before: int = 0
    seen: int = 0  # distinct messages received
    matched: int = 0  # selected (and within --max): moved, or would be in a dry run
    moved: int = 0  # copied to the source queue and deleted from the DLQ
    # copied, but the DLQ did not delete them: in both queues; a later redrive sends them again
    # (consumers skip an event id they have handled)
    copied_not_deleted: int = 0
    skipped: int = 0  # seen and not selected
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # why sends failed
    delete_errors: list[str] = field(default_factory=list)  # why copies were not deleted
    stopped: str = ""  # why the pass stopped before the end (a call refused as a whole)
    left_selected: int = 0
    left_unselected: int = 0
    unexamined: int = 0
    depth_after: int = 0

    @property
    def sent(self) -> int:
        """Messages copied to the source queue: moved, and those the DLQ did not delete."""
        return self.moved + self.copied_not_deleted


# Every message received stays invisible until the end of the pass, so each is seen once. SQS
# takes ~10 ms per receive of 10, moto up to ~45 ms per message in a deep queue: holding for a
# generous 0.1 s per message (at least 5 minutes, at most the SQS maximum of 12 hours) keeps a
# hold from expiring mid-pass, which made a looked-at message come back and the pass stop early.
# Killed midway, the messages it held come back after this; nothing is lost.
HOLD_MIN_SECONDS = 300
HOLD_SECONDS_PER_MESSAGE = 0.1
HOLD_MAX_SECONDS = 12 * 3600
# Receives in a row that bring no message not seen before, after which the pass ends early.
IDLE_RECEIVES_TO_STOP = 3


def redrive(
    dlq: str,
    source: str,
    *,
    selection: Selection,
    max_messages: int | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    report: RedriveReport | None = None,
) -> RedriveReport:
    """Move matching DLQ messages back to ``source`` in batches of 10 (copy, then delete).

    Visits every message once: reads the depth first, holds each message it receives until the
    end, keeps receiving until it has seen that many (or receives keep bringing nothing new),
    then releases what it did not move and reads the depth again for the report.
    ``progress(n)`` is called with each batch of messages seen; ``report``, when given, is the
    one filled in as it goes (a caller stopped midway, by Ctrl-C, can say what was moved: the
    messages held are released on the way out).
    """
    sqs = aws.client("sqs")
    if report is None:
        report = RedriveReport()
    report.depth_before = depth(dlq)
    hold = int(min(HOLD_MAX_SECONDS, max(HOLD_MIN_SECONDS, report.depth_before * HOLD_SECONDS_PER_MESSAGE)))
    held: list[str] = []  # looked at but not moved: released at the end
    # The batch at hand, until each of its messages is held or moved: stopped midway (Ctrl-C), the
    # rest of it is released too, not left hidden for the whole hold; ``gone``: deleted, moved.
    in_hand: list[str] = []
    gone: set[str] = set()
    seen: set[str] = set()
    idle = 0
    try:
        while max_messages is None or report.matched < max_messages:
            batch = _receive(dlq, hold_seconds=hold)
            in_hand = [m["ReceiptHandle"] for m in batch]
            fresh = [m for m in batch if m["MessageId"] not in seen]
            held.extend(m["ReceiptHandle"] for m in batch if m["MessageId"] in seen)  # came back
            if not fresh:
                idle += 1
                if idle >= IDLE_RECEIVES_TO_STOP or len(seen) >= report.depth_before:
                    break
                continue
            idle = 0
            chosen: list[DlqMessage] = []
            for raw in fresh:
                seen.add(raw["MessageId"])
                m = _describe(raw, with_error=False)
                if not selection.matches(m):
                    report.skipped += 1
                    held.append(m.receipt)
                elif max_messages is not None and report.matched + len(chosen) >= max_messages:
                    report.left_selected += 1  # over --max: stays
                    held.append(m.receipt)
                else:
                    chosen.append(m)
            report.matched += len(chosen)
            if dry_run:
                held.extend(m.receipt for m in chosen)
            elif chosen and not _move(sqs, dlq, source, chosen, report, held, gone):
                in_hand = []
                break  # a call refused as a whole: each batch more would meet the same
            in_hand = []
            if progress:
                progress(len(fresh))
    finally:
        kept = set(held)
        held.extend(r for r in in_hand if r not in kept and r not in gone)
        if held:
            release(dlq, held)
    report.seen = len(seen)
    report.left_selected += report.failed
    report.left_unselected = report.skipped
    if dry_run:  # nothing moved: what would move is still there too
        report.left_selected += report.matched
    report.depth_after = depth(dlq)
    report.unexamined = max(
        0, report.depth_after - report.left_selected - report.left_unselected - report.copied_not_deleted
    )
    return report


def _move(
    sqs: Any,
    dlq: str,
    source: str,
    chosen: list[DlqMessage],
    report: RedriveReport,
    held: list[str],
    gone: set[str],
) -> bool:
    """Copy ``chosen`` to ``source``, then delete the copied ones from the DLQ. False if either call
    was refused as a whole (a permission, an outage; ``report.stopped`` says which): the pass stops
    there, every message it holds released. Copies the DLQ did not delete are counted and released
    with the messages looked at: in both queues, they are sent again by a later redrive, and their
    consumer skips the duplicate."""
    try:
        resp = sqs.send_message_batch(
            QueueUrl=aws.queue_url(source),
            Entries=[
                {
                    "Id": str(i),
                    "MessageBody": m.body,
                    "MessageAttributes": {
                        k: v for k, v in m.attributes.items() if k not in RESERVED_ATTRIBUTES
                    },
                }
                for i, m in enumerate(chosen)
            ],
        )
    except (ClientError, BotoCoreError) as exc:
        report.failed += len(chosen)
        report.errors.append(f"SendMessageBatch to {source} failed: {exc}")
        report.stopped = f"{source} refused SendMessageBatch ({exc})"
        held.extend(m.receipt for m in chosen)
        return False
    failed, sent = aws.batch_answer(resp, len(chosen), "SendMessageBatch")
    for i, why in failed.items():
        report.failed += 1
        report.errors.append(why)
        held.append(chosen[i].receipt)
    done = [chosen[i] for i in sorted(sent)]  # only what has its copy leaves the DLQ
    if not done:
        return True
    try:
        resp = sqs.delete_message_batch(
            QueueUrl=aws.queue_url(dlq),
            Entries=[{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(done)],
        )
    except (ClientError, BotoCoreError) as exc:  # (a timeout may have deleted some: counted as not)
        report.copied_not_deleted += len(done)
        report.delete_errors.append(f"DeleteMessageBatch failed: {exc}")
        report.stopped = f"{dlq} refused DeleteMessageBatch ({exc})"
        held.extend(m.receipt for m in done)
        return False
    kept, _deleted = aws.batch_answer(resp, len(done), "DeleteMessageBatch")
    report.delete_errors.extend(why for why in kept.values() if why not in report.delete_errors)
    report.copied_not_deleted += len(kept)
    report.moved += len(done) - len(kept)
    held.extend(done[i].receipt for i in kept)
    gone.update(m.receipt for i, m in enumerate(done) if i not in kept)
    return True


def start_native_move(dlq: str, source: str) -> str:
    """Real AWS only: let SQS move everything (StartMessageMoveTask). Returns the task handle."""
    try:
        resp = aws.client("sqs").start_message_move_task(
            SourceArn=aws.queue_arn(dlq), DestinationArn=aws.queue_arn(source)
        )
    except ClientError as exc:
        raise DlqError(f"StartMessageMoveTask failed ({exc}); run without --native to copy instead") from None
    return str(resp["TaskHandle"])
