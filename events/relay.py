"""The relay: publish committed outbox rows to their producer's SNS topic.

- Claims due rows with ``SELECT ... FOR UPDATE SKIP LOCKED``, so any number of
  relays run at once and each row is handled by one of them.
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
import os
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from . import aws, metrics, signing, topology
from .models import OutboxEvent

logger = logging.getLogger(__name__)

SNS_BATCH = 10
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
    """Seconds before the next try after ``attempts`` failures: exponential, capped, "equal jitter".

    Half the delay is fixed so a retry never comes at once; the other half is
    random so many failed rows (and relays) do not retry in lockstep.
    """
    ceiling = get_exponential_backoff_interval(
        factor=settings.OUTBOX_RETRY_BASE_SECONDS,
        retries=max(attempts - 1, 0),
        maximum=settings.OUTBOX_RETRY_MAX_SECONDS,
        full_jitter=False,
    )
    return ceiling / 2 + random.uniform(0, ceiling / 2)


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


def relay_once(*, limit: int | None = None) -> RelayResult:
    """Claim up to ``limit`` due rows, publish them, record the outcome. One DB transaction."""
    limit = limit or settings.OUTBOX_RELAY_BATCH_SIZE
    result = RelayResult()
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            OutboxEvent.objects.select_for_update(skip_locked=True)
            .filter(published_at__isnull=True)
            .filter(Q(next_attempt_at__lte=now) | Q(next_attempt_at__isnull=True))
            .order_by("next_attempt_at", "occurred_at")[:limit]
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


class RelayKicker:
    """After a commit, ask for a relay run without making the committer wait.

    ``request()`` only sets a flag (well under a microsecond); a daemon thread
    per process sends one ``events.relay_outbox`` task per wake-up, at most one
    per ``OUTBOX_KICK_MIN_INTERVAL_SECONDS``, so a stream of commits coalesces
    into a few tasks (the first after a quiet spell goes at once). If the broker
    is unreachable the thread backs off; the periodic sweep publishes the rows
    regardless.
    """

    def __init__(self) -> None:
        self._wanted = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self.sent = 0

    def request(self) -> None:
        if not settings.OUTBOX_KICK_RELAY:
            return
        self._wanted.set()
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="outbox-relay-kicker", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        from .tasks import relay_outbox

        failures = 0
        while True:
            self._wanted.wait()
            self._wanted.clear()
            try:
                relay_outbox.apply_async(retry=False)
                self.sent += 1
                failures = 0
                time.sleep(settings.OUTBOX_KICK_MIN_INTERVAL_SECONDS)  # later commits: the next kick
            except Exception as exc:  # noqa: BLE001 - the sweep covers any failure here
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                logger.warning("could not enqueue the outbox relay (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                self._wanted.set()


kicker = RelayKicker()
