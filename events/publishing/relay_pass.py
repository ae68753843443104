"""One pass of the relay: claim due rows, publish them to their producer's SNS topic, record the outcome.

- Claims due rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` (claiming.py, one statement),
  so any number of relays run at once and each row is handled by one of them; alerts first
  (the rows' ``priority``), so an alert recorded behind 100,000 bulk events goes out on the
  next pass.
- Publishes with PublishBatch (10 per call, ``OUTBOX_RELAY_PUBLISH_CONCURRENCY``
  calls in flight; sns.py) with message attributes ``event_type`` and ``producer`` and
  the signature, then marks the rows published with one UPDATE in the same
  database transaction that held their locks.
- A failed entry keeps its row unpublished, with the attempt and error
  recorded and ``next_attempt_at`` pushed back (bounded exponential backoff
  with full jitter). The periodic sweep picks it up again.
- At-least-once: a crash after PublishBatch but before the commit publishes
  those rows again on the next pass; nothing committed is ever skipped.

relay.py runs passes one after another (and in lanes, through a backlog), one relay at a time.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F
from django.db.models.functions import Now
from django.utils import timezone

from core.backoff import backoff
from core.fields import storable

from .. import topology
from ..models import OutboxEvent
from ..operations import metrics
from . import claiming, sns

logger = logging.getLogger(__name__)

MAX_KEPT_ERRORS = 10


@dataclass
class RelayResult:
    published: int = 0
    failed: int = 0
    batches: int = 0
    not_sent: int = 0  # rows left due as they were: their pass ran out of its publishing time
    errors: list[str] = field(default_factory=list)
    held_out: bool = False  # a hold ran out (holding.py): the rest waits for a kick or the sweep

    def __iadd__(self, other: RelayResult) -> RelayResult:
        self.published += other.published
        self.failed += other.failed
        self.batches += other.batches
        self.not_sent += other.not_sent
        self.errors.extend(other.errors[:5])
        self.held_out = self.held_out or other.held_out
        return self


def backoff_delay(attempts: int) -> float:
    """Seconds before a row's next try after ``attempts`` failures (core.backoff's rule)."""
    return backoff(
        attempts, base=settings.OUTBOX_RETRY_BASE_SECONDS, maximum=settings.OUTBOX_RETRY_MAX_SECONDS
    )


def _mark_published(rows: list[OutboxEvent], at: Any) -> None:
    """One UPDATE for all the rows just published (their SNS message ids side by side)."""
    table = OutboxEvent._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            f'UPDATE "{table}" AS o SET published_at = %s, last_attempt_at = %s, next_attempt_at = NULL, '
            "attempts = o.attempts + 1, sns_message_id = v.mid "
            "FROM unnest(%s::uuid[], %s::text[]) AS v(id, mid) WHERE o.id = v.id",
            [at, at, [r.id for r in rows], [r.sns_message_id for r in rows]],
        )
    for r in rows:
        r.published_at = r.last_attempt_at = at
        r.attempts += 1
        r.next_attempt_at = None


def relay_once(
    *,
    limit: int | None = None,
    alerts_only: bool = False,
    skip_producers: Collection[str] = (),
    claimed_full: Callable[[], None] | None = None,
    relay_deadline: float | None = None,
) -> RelayResult:
    """Claim up to ``limit`` due rows (alerts first; ``alerts_only``: nothing else; none of
    ``skip_producers``, the topics a hold keeps back), publish them, record the outcome. One DB
    transaction. ``claimed_full`` is called as soon as a claim brings ``limit`` rows (more are
    likely due), before they are published. ``relay_deadline``: the relay's, whose passes start
    until then (sns.publish_all)."""
    limit = limit or settings.OUTBOX_RELAY_BATCH_SIZE
    result = RelayResult()
    with transaction.atomic():
        rows = claiming.claim(limit, alerts_only=alerts_only, skip_producers=skip_producers)
        if not rows:
            return result
        if claimed_full is not None and len(rows) >= limit:
            claimed_full()
        unsendable = _unsendable(rows)
        by_topic: dict[str, list[OutboxEvent]] = defaultdict(list)
        for row in rows:
            if str(row.id) not in unsendable:
                by_topic[topology.topic_name(row.producer)].append(row)
        chunks = [
            (topic, chunk) for topic, topic_rows in by_topic.items() for chunk in sns.batches(topic_rows)
        ]
        answered = unsendable | sns.publish_all(chunks, relay_deadline=relay_deadline)
        left = {row_id for row_id, error in answered.items() if error == sns.NOT_SENT}  # due as they are
        result.batches = sum(1 for _topic, chunk in chunks if str(chunk[0].id) not in left)  # calls made
        failures = {row_id: error for row_id, error in answered.items() if row_id not in left}
        done = timezone.now()
        ok_rows = [r for r in rows if str(r.id) not in answered]
        if ok_rows:
            _mark_published(ok_rows, done)
        for r in rows:
            if str(r.id) in failures:
                _record_failure(r, failures[str(r.id)], done)
        result.published = len(ok_rows)
        result.failed = len(failures)
        result.not_sent = len(left)
        result.errors = sorted(set(failures.values()))[:5]
    for r in ok_rows:
        metrics.EVENTS_PUBLISHED.labels(r.type).inc()
        metrics.RELAY_LAG.observe((r.published_at - r.occurred_at).total_seconds())  # type: ignore[operator]
    if left:
        metrics.RELAY_NOT_SENT.inc(len(left))
        logger.warning(
            "relay: %d published, %d not sent: the pass ran out of its publishing time (a slow "
            "endpoint), they stay due for the next pass",
            result.published,
            result.not_sent,
        )
    if failures:
        metrics.RELAY_FAILURES.inc(len(failures))
        logger.warning(
            "relay: %d published, %d failed (will retry with backoff): %s",
            result.published,
            result.failed,
            "; ".join(result.errors),
        )
    return result


def _unsendable(rows: list[OutboxEvent]) -> dict[str, str]:
    """{row id: why} for the rows whose message cannot be made (data the database gives back in
    a form the serializer refuses: a number past 64 bits, nesting too deep). Each fails alone,
    with its reason and backoff, like a refused entry: raised, it would fail its whole pass, and
    every pass after it that claims it (an alert is claimed first by every one)."""
    failed = {}
    for row in rows:
        try:
            row.message_body()
        except Exception as exc:  # noqa: BLE001 - one row must not cost the others their pass
            failed[str(row.id)] = f"its message cannot be made: {type(exc).__name__}: {exc}"
    return failed


def _record_failure(row: OutboxEvent, error: str, at: Any) -> None:
    attempts = row.attempts + 1
    error = storable(error)  # an endpoint's text: a NUL in it would fail the pass's transaction
    errors = (list(row.errors) + [{"at": at.isoformat(), "error": error[:500]}])[-MAX_KEPT_ERRORS:]
    OutboxEvent.objects.filter(pk=row.pk).update(
        attempts=F("attempts") + 1,
        last_attempt_at=at,
        last_error=error[:2000],
        errors=errors,
        # the database's clock, which a claim compares it with (claiming.py)
        next_attempt_at=ExpressionWrapper(
            Now() + timedelta(seconds=backoff_delay(attempts)), output_field=DateTimeField()
        ),
    )
