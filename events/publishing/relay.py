"""The relay: publish committed outbox rows to their producer's SNS topic.

- Claims due rows with ``SELECT ... FOR UPDATE SKIP LOCKED``, so any number of
  relays run at once and each row is handled by one of them; alerts first (the rows'
  ``priority``), so an alert recorded behind 100,000 bulk events goes out on the next pass.
- Publishes with PublishBatch (10 per call) with message attributes
  ``event_type`` and ``producer``, then marks the rows published in the same
  database transaction that held their locks.
- A failed entry keeps its row unpublished, with the attempt and error
  recorded and ``next_attempt_at`` pushed back (bounded exponential backoff
  with full jitter). The periodic sweep picks it up again.
- At-least-once: a crash after PublishBatch but before the commit publishes
  those rows again on the next pass; nothing committed is ever skipped.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.backoff import backoff

from .. import signing, topology
from ..models import PRIORITIES, PRIORITY_ALERT, OutboxEvent
from ..operations import metrics
from ..topology import aws

logger = logging.getLogger(__name__)

MAX_KEPT_ERRORS = 10


@dataclass
class RelayResult:
    published: int = 0
    failed: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)

    def __iadd__(self, other: RelayResult) -> RelayResult:
        self.published += other.published
        self.failed += other.failed
        self.batches += other.batches
        self.errors.extend(other.errors[:5])
        return self


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


def backoff_delay(attempts: int) -> float:
    """Seconds before a row's next try after ``attempts`` failures (core.backoff's rule)."""
    return backoff(
        attempts, base=settings.OUTBOX_RETRY_BASE_SECONDS, maximum=settings.OUTBOX_RETRY_MAX_SECONDS
    )


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
    resp = aws.client("sns").publish_batch(TopicArn=aws.topic_arn(topic), PublishBatchRequestEntries=entries)
    failed = {}
    for f in resp.get("Failed", []):
        row = rows[int(f["Id"])]
        failed[str(row.id)] = f"{f.get('Code')}: {f.get('Message', '')}".strip()
    for ok in resp.get("Successful", []):
        rows[int(ok["Id"])].sns_message_id = ok.get("MessageId", "")
    return failed


def relay_once(*, limit: int | None = None, alerts_only: bool = False) -> RelayResult:
    """Claim up to ``limit`` due rows (alerts first; ``alerts_only``: nothing else), publish them,
    record the outcome. One DB transaction."""
    limit = limit or settings.OUTBOX_RELAY_BATCH_SIZE
    result = RelayResult()
    now = timezone.now()
    with transaction.atomic():
        rows: list[OutboxEvent] = []
        # One ordered scan of the index outbox_unpublished (priority, next_attempt_at,
        # occurred_at) per priority: a claim reads at most ``limit`` entries, however deep the
        # backlog and whatever the planner's statistics say (an OR or a range on priority there
        # would sort the whole backlog instead).
        for priority in (PRIORITY_ALERT,) if alerts_only else PRIORITIES:
            if len(rows) < limit:
                rows += (
                    OutboxEvent.objects.select_for_update(skip_locked=True)
                    .filter(published_at__isnull=True, priority=priority, next_attempt_at__lte=now)
                    .order_by("next_attempt_at", "occurred_at")[: limit - len(rows)]
                )
        if not rows:
            return result
        by_topic: dict[str, list[OutboxEvent]] = defaultdict(list)
        for row in rows:
            by_topic[topology.topic_name(row.producer)].append(row)
        chunks = [(topic, chunk) for topic, topic_rows in by_topic.items() for chunk in batches(topic_rows)]
        failures: dict[str, str] = {}
        for n, (topic, chunk) in enumerate(chunks):
            result.batches += 1
            try:
                failures.update(publish_batch(topic, chunk))
            except BotoCoreError as exc:
                # The endpoint is unreachable: fail this and the remaining chunks now rather
                # than hammering it; the rows' backoff spaces the retries.
                error = f"{type(exc).__name__}: {exc}"
                failures.update({str(r.id): error for _, c in chunks[n:] for r in c})
                break
            except Exception as exc:  # noqa: BLE001 - one bad chunk must not stall the others
                error = f"{type(exc).__name__}: {exc}"
                failures.update({str(r.id): error for r in chunk})
        done = timezone.now()
        ok_rows = [r for r in rows if str(r.id) not in failures]
        if ok_rows:
            for r in ok_rows:
                r.published_at = done
                r.attempts += 1
                r.last_attempt_at = done
                r.next_attempt_at = None
            OutboxEvent.objects.bulk_update(
                ok_rows,
                ["published_at", "attempts", "last_attempt_at", "next_attempt_at", "sns_message_id"],
                batch_size=1000,
            )
        for r in rows:
            if str(r.id) in failures:
                _record_failure(r, failures[str(r.id)], done)
        result.published = len(ok_rows)
        result.failed = len(failures)
        result.errors = sorted(set(failures.values()))[:5]
    for r in ok_rows:
        metrics.EVENTS_PUBLISHED.labels(r.type).inc()
        metrics.RELAY_LAG.observe((r.published_at - r.occurred_at).total_seconds())  # type: ignore[operator]
    if failures:
        metrics.RELAY_FAILURES.inc(len(failures))
        logger.warning(
            "relay: %d published, %d failed (will retry with backoff): %s",
            result.published,
            result.failed,
            "; ".join(result.errors),
        )
    return result


def _record_failure(row: OutboxEvent, error: str, at: Any) -> None:
    attempts = row.attempts + 1
    errors = (list(row.errors) + [{"at": at.isoformat(), "error": error[:500]}])[-MAX_KEPT_ERRORS:]
    OutboxEvent.objects.filter(pk=row.pk).update(
        attempts=F("attempts") + 1,
        last_attempt_at=at,
        last_error=error[:2000],
        errors=errors,
        next_attempt_at=at + timedelta(seconds=backoff_delay(attempts)),
    )


def relay_pending(*, max_seconds: float | None = None, limit: int | None = None) -> RelayResult:
    """Publish everything due, pass after pass, until none is left or time is up."""
    max_seconds = settings.OUTBOX_RELAY_MAX_SECONDS if max_seconds is None else max_seconds
    deadline = time.monotonic() + max_seconds
    total = RelayResult()
    while True:
        step = relay_once(limit=limit)
        total += step
        if step.published + step.failed == 0 or step.failed or time.monotonic() > deadline:
            return total
