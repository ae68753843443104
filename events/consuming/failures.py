"""Consumer failures: why a message failed (first and last error, how often), keyed by SQS message id.

SQS keeps a message's id when it moves it to the DLQ, so ``dlq_inspect`` shows why from here.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.db.models import F
from django.utils import timezone

from core.db import connection_lost, drop_broken_connection
from core.fields import storable

from ..models import ConsumerFailure

logger = logging.getLogger(__name__)


def record_failure(
    consumer: str, message_id: str, envelope: dict[str, Any], error: str, *, poisoned: bool
) -> None:
    """Remember why a message failed (first and last error), by SQS message id: SQS keeps the id
    when it moves the message to the DLQ, so ``dlq_inspect`` shows why. Never raises."""
    if not message_id:
        return
    used = None
    try:
        error = storable(str(error))  # an exception's text: a NUL in it would fail the statement below
        connection.close_if_health_check_failed()  # the ping the first statement would send, first
        used = connection.connection
        _record(consumer, message_id, envelope, error, poisoned)
    except DatabaseError as exc:
        # A connection the server dropped since its last use (a poison message is often a batch's
        # first statement) is replaced once; any other error is only logged.
        try:
            if not isinstance(exc, (OperationalError, InterfaceError)) or not connection_lost(used):
                raise
            drop_broken_connection()
            _record(consumer, message_id, envelope, error, poisoned)
        except DatabaseError:
            logger.exception("could not record the failure of message %s (%s)", message_id, error)
    except Exception:  # noqa: BLE001 - whatever a hostile message holds, its refusal goes on
        logger.exception("could not record the failure of message %s (%s)", message_id, error)


def _record(consumer: str, message_id: str, envelope: dict[str, Any], error: str, poisoned: bool) -> None:
    updated = ConsumerFailure.objects.filter(consumer=consumer, message_id=message_id).update(
        last_error=error, failures=F("failures") + 1, poisoned=poisoned, last_seen_at=timezone.now()
    )
    if not updated:
        ConsumerFailure.objects.get_or_create(
            consumer=consumer,
            message_id=message_id,
            defaults={
                "event_id": storable(str(envelope.get("id", "")), 64),
                "event_type": storable(str(envelope.get("type", "")), 100),
                "aggregate_id": storable(str(envelope.get("aggregate_id", "")), 64),
                "first_error": error,
                "last_error": error,
                "poisoned": poisoned,
            },
        )
