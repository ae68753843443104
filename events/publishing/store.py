"""The event store: the outbox rows kept after publishing, the producer's answer to "re-send" and
"what happened", pruned after EVENT_RETENTION_DAYS."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from ..models import OutboxEvent

logger = logging.getLogger(__name__)


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
