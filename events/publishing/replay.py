"""Replay events from the event store: to their topic, or straight to one consumer's queue.

A replayed message is byte-for-byte the original envelope (same event id, so
idempotent consumers skip what they already did) plus a ``replayed`` message
attribute. ``to_queue`` sends it as SNS raw delivery would have put it there,
so only that consumer sees it: this is how a new consumer is backfilled.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from botocore.exceptions import BotoCoreError, ClientError
from django.db.models import QuerySet

from .. import topology
from ..models import OutboxEvent
from ..operations import metrics
from ..topology import aws
from ..topology.aws import BATCH_MAX_ENTRIES
from .sns import batches, message_attributes, publish_batch


class ReplayError(ValueError):
    """A replay request that cannot be carried out (unknown queue, nothing selected...)."""


@dataclass
class ReplayReport:
    count: int
    target: str
    dry_run: bool
    sample: list[OutboxEvent] = field(default_factory=list)
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def select_events(
    *,
    ids: Sequence[str] = (),
    type: str | None = None,
    aggregate_type: str | None = None,
    aggregate_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[OutboxEvent]:
    """Events matching every given filter, oldest first."""
    qs = OutboxEvent.objects.all()
    if ids:
        qs = qs.filter(id__in=list(ids))
    if type:
        qs = qs.filter(type=type)
    if aggregate_type:
        qs = qs.filter(aggregate_type=aggregate_type)
    if aggregate_id:
        qs = qs.filter(aggregate_id=aggregate_id)
    if since:
        qs = qs.filter(occurred_at__gte=since)
    if until:
        qs = qs.filter(occurred_at__lt=until)
    return qs.order_by("occurred_at", "id")


def resolve_queue(name: str) -> str:
    """A consumer name ("invoicing") or a full queue name -> the full queue name (must exist)."""
    topo = topology.build()
    try:
        full = topo.queue(name).name if not name.endswith("-dlq") else name
    except KeyError:
        full = name
    try:
        aws.queue_url(full)
    except ClientError:
        consumers = ", ".join(q.consumer for q in topo.queues if q.kind == "events")
        raise ReplayError(
            f"no queue {name!r} (tried {full!r}). Consumer queues: {consumers}; "
            "run messaging_provision if it should exist."
        ) from None
    return full


def replay(
    events: QuerySet[OutboxEvent],
    *,
    to_queue: str | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    sample_size: int = 5,
) -> ReplayReport:
    """Re-send ``events`` to their topics (default) or to one queue. Streams; batches of 10.
    ``progress(n)`` is called with the events sent by each batch (failed ones are not counted)."""
    queue = resolve_queue(to_queue) if to_queue else None
    count = events.count()
    report = ReplayReport(
        count=count,
        target=f"queue {queue}" if queue else "their topics",
        dry_run=dry_run,
        sample=list(events[:sample_size]),
    )
    if dry_run or count == 0:
        return report
    buffers: dict[str, list[OutboxEvent]] = defaultdict(list)
    for row in events.iterator(chunk_size=500):
        key = queue or topology.topic_name(row.producer)
        buffers[key].append(row)
        if len(buffers[key]) == BATCH_MAX_ENTRIES:
            _flush(key, buffers.pop(key), queue is not None, report, progress)
    for key, rows in buffers.items():
        _flush(key, rows, queue is not None, report, progress)
    metrics.EVENTS_REPLAYED.labels("queue" if queue else "topic").inc(report.sent)
    return report


def _flush(
    key: str,
    rows: list[OutboxEvent],
    to_queue: bool,
    report: ReplayReport,
    progress: Callable[[int], None] | None,
) -> None:
    sent = 0
    for group in batches(rows):  # 10 big events can exceed a request's 256 KiB
        try:
            failed = send_to_queue(key, group) if to_queue else publish_batch(key, group, replayed=True)
        except (BotoCoreError, ClientError) as exc:
            failed = {str(r.id): f"{type(exc).__name__}: {exc}" for r in group}
        sent += len(group) - len(failed)
        report.failed += len(failed)
        report.errors.extend(list(failed.values())[: max(0, 5 - len(report.errors))])
    report.sent += sent
    if progress:
        progress(sent)  # what was sent: a failed event is not replayed


def send_to_queue(queue: str, rows: Iterable[OutboxEvent]) -> dict[str, str]:
    """SendMessageBatch up to 10 rows to ``queue`` as SNS raw delivery would; {row id: error}."""
    rows = list(rows)
    resp = aws.client("sqs").send_message_batch(
        QueueUrl=aws.queue_url(queue),
        Entries=[
            {
                "Id": str(i),
                "MessageBody": row.message_body(),
                "MessageAttributes": message_attributes(row, replayed=True),
            }
            for i, row in enumerate(rows)
        ],
    )
    failed, _sent = aws.batch_answer(resp, len(rows), "SendMessageBatch")
    return {str(rows[i].id): why for i, why in failed.items()}
