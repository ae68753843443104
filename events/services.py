"""Write services of the event backbone."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from .models import Heartbeat, OutboxEvent

logger = logging.getLogger(__name__)


def heartbeat_record(*, name: str, detail: dict[str, Any] | None = None) -> Heartbeat:
    """Record that ``name`` is alive now. Idempotent: one row per name, last write wins."""
    beat, _ = Heartbeat.objects.update_or_create(
        name=name, defaults={"beat_at": timezone.now(), "detail": detail or {}}
    )
    return beat


def event_store_prune(*, older_than_days: int | None = None, batch_size: int | None = None) -> int:
    """Delete PUBLISHED events that occurred before the retention window. Returns the count.

    Unpublished rows are never deleted, whatever their age: they are the
    outbox's promise that the event will still go out.
    """
    days = settings.EVENT_RETENTION_DAYS if older_than_days is None else older_than_days
    batch = batch_size or settings.EVENT_PRUNE_BATCH_SIZE
    cutoff = timezone.now() - timedelta(days=days)
    total = 0
    while True:
        ids = list(
            OutboxEvent.objects.filter(published_at__isnull=False, occurred_at__lt=cutoff)
            .order_by("occurred_at")
            .values_list("id", flat=True)[:batch]
        )
        if not ids:
            break
        deleted, _ = OutboxEvent.objects.filter(id__in=ids).delete()
        total += deleted
    if total:
        logger.info("event store: pruned %d events older than %d days", total, days)
    return total


def consumer_failure_record(
    *, consumer: str, message_id: str, envelope: dict[str, Any], error: str, poisoned: bool
) -> None:
    """Remember why a message failed (first and last error). Never raises: it is bookkeeping."""
    from django.db import DatabaseError
    from django.db.models import F

    from .models import ConsumerFailure

    if not message_id:
        return
    try:
        updated = ConsumerFailure.objects.filter(consumer=consumer, message_id=message_id).update(
            last_error=error, failures=F("failures") + 1, poisoned=poisoned, last_seen_at=timezone.now()
        )
        if not updated:
            ConsumerFailure.objects.get_or_create(
                consumer=consumer,
                message_id=message_id,
                defaults={
                    "event_id": str(envelope.get("id", ""))[:64],
                    "event_type": str(envelope.get("type", ""))[:100],
                    "aggregate_id": str(envelope.get("aggregate_id", ""))[:64],
                    "first_error": error,
                    "last_error": error,
                    "poisoned": poisoned,
                },
            )
    except DatabaseError:
        logger.exception("could not record the failure of message %s (%s)", message_id, error)
