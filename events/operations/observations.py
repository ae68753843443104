"""Readings of queues and DLQs: depths, ages, what is missing (the health model's input; the outbox's
readings are in counts.py).

Age of the oldest message: SQS's API does not return it. On real AWS it comes
from CloudWatch (``ApproximateAgeOfOldestMessage``). Against a local endpoint
it comes from what our pollers observe: every receive records the age of the
oldest message it got and when it polled, so a backlog shows as old messages
received, and a queue nobody polls shows as "no poll since". DLQs are peeked
(a receive there increments nothing that matters: DLQs have no redrive).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings
from django.utils import timezone

from .. import topology
from ..models import Heartbeat
from ..topology import aws
from . import metrics

logger = logging.getLogger(__name__)


@dataclass
class QueueStat:
    name: str
    kind: str  # events | tasks
    is_dlq: bool
    visible: int
    in_flight: int
    delayed: int
    oldest_age: float | None  # seconds; None = unknown
    missing: bool = False  # the queue does not exist (deleted, never provisioned): counts are 0
    consumer: str = ""  # the name operators' commands take (dlq_redrive payments)

    @property
    def depth(self) -> int:
        return self.visible + self.in_flight + self.delayed


# -- observations by pollers (local endpoint) -------------------------------
_observed: dict[str, float] = {}  # queue -> when this process last wrote its observation
_oldest_since: dict[str, float] = {}  # queue -> the oldest age received since then
_observed_lock = threading.Lock()
OBSERVE_EVERY_SECONDS = 5.0


def observe_receive(queue: str, messages: list[dict[str, Any]]) -> None:
    """Pollers call this after every receive. Writes at most every ``OBSERVE_EVERY_SECONDS`` per
    queue and process, however old the messages (the oldest age received since the last write):
    a backlog of old messages, the one a consumer restarted after an outage works through, wrote
    the same row at every receive before, an upsert each poller of each process queued on."""
    now = time.time()
    ages = [now - int(m.get("Attributes", {}).get("SentTimestamp", now * 1000)) / 1000 for m in messages]
    with _observed_lock:
        oldest = max(_oldest_since.get(queue, 0.0), *ages, 0.0)
        if now - _observed.get(queue, 0.0) < OBSERVE_EVERY_SECONDS:
            _oldest_since[queue] = oldest
            return
        _observed[queue], _oldest_since[queue] = now, 0.0
    try:
        Heartbeat.objects.update_or_create(
            name=f"queue:{queue}",
            defaults={
                "beat_at": timezone.now(),
                "detail": {"oldest_age": round(oldest, 3), "received": len(messages)},
            },
        )
    except Exception:  # noqa: BLE001 - observation must never break consumption
        logger.debug("could not record the observation of %s", queue, exc_info=True)


def _observed_age(queue: str, visible: int) -> float | None:
    if visible == 0:
        return 0.0
    beat = Heartbeat.objects.filter(name=f"queue:{queue}").first()
    if beat is None:
        return None
    since_poll = (timezone.now() - beat.beat_at).total_seconds()
    recent = since_poll <= max(3 * settings.CONSUMER_WAIT_SECONDS, 2 * OBSERVE_EVERY_SECONDS)
    observed = float(beat.detail.get("oldest_age", 0.0))
    # Nobody polled lately: the messages waiting are at least that old.
    return observed if recent else max(observed, since_poll)


def _peek_oldest(queue: str) -> float | None:
    msgs = (
        aws.client("sqs")
        .receive_message(
            QueueUrl=aws.queue_url(queue),
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            MessageSystemAttributeNames=["SentTimestamp"],
        )
        .get("Messages", [])
    )
    if not msgs:
        return None
    now = time.time()
    return max(now - int(m["Attributes"]["SentTimestamp"]) / 1000 for m in msgs)


def _cloudwatch_age(queue: str) -> float | None:
    end = timezone.now()
    resp = aws.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/SQS",
        MetricName="ApproximateAgeOfOldestMessage",
        Dimensions=[{"Name": "QueueName", "Value": queue}],
        StartTime=end - timedelta(minutes=10),
        EndTime=end,
        Period=60,
        Statistics=["Maximum"],
    )
    points = sorted(resp.get("Datapoints", []), key=lambda p: p["Timestamp"])
    return float(points[-1]["Maximum"]) if points else None


QUEUE_MISSING_CODES = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


def is_queue_missing(exc: BaseException) -> bool:
    """Whether a boto3 error says the queue does not exist."""
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in QUEUE_MISSING_CODES


def missing_queues() -> list[str]:
    """Names of the topology's queues and DLQs that do not exist right now.

    One uncached ListQueues (by the environment's prefix) per 1,000 queues, so readiness probes
    and the monitor can call it every few seconds. Raises on SQS errors (unreachable, denied).
    """
    wanted = {n for spec in topology.build().queues for n in (spec.name, spec.dlq_name)}
    existing: set[str] = set()
    paginator = aws.client("sqs").get_paginator("list_queues")
    # MaxResults set, so SQS pages with NextToken instead of stopping silently at 1,000 queues.
    pages = paginator.paginate(QueueNamePrefix=settings.RESOURCE_PREFIX, PaginationConfig={"PageSize": 1000})
    for page in pages:
        existing.update(url.rsplit("/", 1)[-1] for url in page.get("QueueUrls", []))
    return sorted(wanted - existing)


def _attributes(name: str) -> dict[str, str] | None:
    """The queue's depth attributes, or None when it does not exist."""
    try:
        return dict(
            aws.client("sqs").get_queue_attributes(
                QueueUrl=aws.queue_url(name),
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
        )
    except ClientError as exc:
        if is_queue_missing(exc):
            return None
        raise


def queue_stats(*, with_age: bool = True) -> list[QueueStat]:
    """Depth (visible, in flight, delayed) and oldest age of every queue and DLQ.

    A queue that does not exist is reported with ``missing=True`` (and zero counts) rather than
    raising, so one deleted queue does not blank the whole status; other SQS errors raise.
    """
    stats: list[QueueStat] = []
    queues = [
        (spec, name, is_dlq)
        for spec in topology.build().queues
        for name, is_dlq in ((spec.name, False), (spec.dlq_name, True))
    ]
    # One GetQueueAttributes per queue, all at once (the boto3 client is thread-safe): the page and
    # messaging_status wait for the slowest call, not for the sum of them.
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(_attributes, [name for _, name, _ in queues]))
    for (spec, name, is_dlq), attrs in zip(queues, answers, strict=True):
        stat = QueueStat(
            name=name,
            kind=spec.kind,
            is_dlq=is_dlq,
            visible=int((attrs or {}).get("ApproximateNumberOfMessages", 0)),
            in_flight=int((attrs or {}).get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int((attrs or {}).get("ApproximateNumberOfMessagesDelayed", 0)),
            oldest_age=None,
            missing=attrs is None,
            consumer=spec.consumer,
        )
        if attrs is None:
            stats.append(stat)
            continue
        if with_age:
            stat.oldest_age = _age(stat)
        stats.append(stat)
        metrics.QUEUE_DEPTH.labels(name, "visible").set(stat.visible)
        metrics.QUEUE_DEPTH.labels(name, "in_flight").set(stat.in_flight)
        metrics.QUEUE_DEPTH.labels(name, "delayed").set(stat.delayed)
        if stat.oldest_age is not None:
            metrics.QUEUE_OLDEST_AGE.labels(name).set(stat.oldest_age)
    return stats


def _age(stat: QueueStat) -> float | None:
    if stat.visible + stat.delayed == 0 and (stat.is_dlq or stat.in_flight == 0):
        return 0.0
    try:
        if not settings.AWS_ENDPOINT_URL:
            return _cloudwatch_age(stat.name)
        if stat.is_dlq:
            return _peek_oldest(stat.name)
        if stat.kind == "events":
            return _observed_age(stat.name, stat.visible + stat.delayed)
    except Exception:  # noqa: BLE001 - a missing age must not hide the depths
        logger.warning("could not read the oldest message age of %s", stat.name, exc_info=True)
    return None


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
