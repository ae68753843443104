"""Re-send missing events to one consumer's queue: the path of ``events_replay --to-queue``.

The same envelope bytes (same event id), signed like every publish, with SNS raw delivery's
attributes and ``replayed=true``, SendMessageBatch 10 at a time with a few calls in flight. Only
that consumer's queue gets them. Each event sent is remembered (``DeliveryResend``) so the next
passes treat it as in flight for the grace period rather than send it again; still unaccounted
after that, it was lost again and goes again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import connection
from django.utils import timezone

from ..models import ConsumerFailure, DeliveryResend, OutboxEvent, ProcessedEvent
from ..operations import metrics
from ..publishing.replay import ReplayError, resolve_queue, send_to_queue
from ..publishing.sns import batches
from .accounting import AuditError

LOAD_CHUNK = 500  # rows loaded (and sent) at a time


@dataclass
class Sent:
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def resend(consumer: str, items: list[Any]) -> Sent:
    """Send ``items`` (event ids in this database, or unsaved rows from another's API) to
    ``consumer``'s queue; record what went. Streams a chunk at a time."""
    result = Sent()
    if not items:
        return result
    try:
        queue = resolve_queue(consumer)
    except ReplayError as exc:
        raise AuditError(f"cannot re-send to {consumer}: {exc}") from None
    with ThreadPoolExecutor(settings.OUTBOX_RELAY_PUBLISH_CONCURRENCY, "audit-resend") as pool:
        # The next chunk is read from the store while the previous one is being sent.
        sending: list[tuple[list[OutboxEvent], Future[dict[str, str]]]] = []
        for rows in _chunks(items):
            chunk = [(group, pool.submit(_send, queue, group)) for group in batches(rows)]
            _settle(consumer, sending, result)
            sending = chunk
        _settle(consumer, sending, result)
    metrics.EVENTS_REPLAYED.labels("backfill").inc(result.sent)
    return result


def _settle(
    consumer: str, sending: list[tuple[list[OutboxEvent], Future[dict[str, str]]]], result: Sent
) -> None:
    """Wait for these sends and remember the events that went."""
    sent_ids: list[uuid.UUID] = []
    for group, future in sending:
        failed = future.result()
        sent_ids += [r.id for r in group if str(r.id) not in failed]
        result.failed += len(failed)
        result.errors += list(failed.values())[: max(0, 5 - len(result.errors))]
    _remember(consumer, sent_ids)
    result.sent += len(sent_ids)


def _send(queue: str, group: list[OutboxEvent]) -> dict[str, str]:
    try:
        return send_to_queue(queue, group)
    except (BotoCoreError, ClientError) as exc:
        return {str(r.id): f"{type(exc).__name__}: {exc}" for r in group}


def _chunks(items: list[Any]) -> Iterator[list[OutboxEvent]]:
    for i in range(0, len(items), LOAD_CHUNK):
        chunk = items[i : i + LOAD_CHUNK]
        if chunk and isinstance(chunk[0], OutboxEvent):
            yield chunk
            continue
        found = OutboxEvent.objects.in_bulk(chunk)
        yield [found[pk] for pk in chunk if pk in found]  # pruned meanwhile: nothing to send


def _remember(consumer: str, event_ids: list[uuid.UUID]) -> None:
    if not event_ids:
        return
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {DeliveryResend._meta.db_table} AS r (consumer, event_id, resent_at, times) "  # noqa: S608
            "SELECT %s, e.id, %s, 1 FROM unnest(%s::uuid[]) AS e(id) "
            "ON CONFLICT (consumer, event_id) "
            "DO UPDATE SET resent_at = EXCLUDED.resent_at, times = r.times + 1",
            [consumer, timezone.now(), event_ids],
        )


def forget_accounted(consumer: str) -> int:
    """Drop the re-send records of events now handled or dead-lettered (or long gone from the
    store); the few left are the gap still open."""
    resend, processed, failures = (
        DeliveryResend._meta.db_table,
        ProcessedEvent._meta.db_table,
        ConsumerFailure._meta.db_table,
    )
    with connection.cursor() as cur:
        cur.execute(
            f"DELETE FROM {resend} r WHERE r.consumer = %(c)s AND ("  # noqa: S608
            f"EXISTS (SELECT 1 FROM {processed} p WHERE p.consumer = %(c)s AND p.event_id = r.event_id) "
            f"OR r.event_id::text IN (SELECT f.event_id FROM {failures} f WHERE f.consumer = %(c)s) "
            "OR r.resent_at < now() - make_interval(days => %(days)s))",
            {"c": consumer, "days": settings.EVENT_RETENTION_DAYS},
        )
        return cur.rowcount
