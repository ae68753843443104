"""Consumer side of the backbone: handler registry and processing of one SQS message.

Handlers live in each consuming app's ``consumers.py`` and are registered per
event type::

    @handles("invoice.issued")
    def payment_create_for_invoice(event: Event) -> None: ...

The consumer name defaults to the handler's app (its top-level package), which
is also the name of the app's queue in ``events/topology.py``.

``process_message`` is the whole contract, used by push and pull mode alike:

- unsigned, signed with an unknown or retired key, or badly signed
  (events/signing.py) / not JSON / not an object / missing, ill-typed or
  out-of-range envelope fields (events/envelope.py) / a known type from the
  wrong producer or about the wrong aggregate type / unknown
  ``schema_version`` / data off its schema / same id with different data:
  ``Poison`` -> logged with the reason and SQS message id, counted, sent to
  the DLQ at once (the messages behind it are not held up);
- an event type this consumer has no handler for: acknowledged and counted;
- already processed by this consumer: acknowledged, effects not run again;
- otherwise the handler runs in a transaction that also writes the
  processed-event record; if it raises, nothing is committed and the message
  comes back later (after ``maxReceiveCount`` receives SQS moves it to the DLQ).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils.dateparse import parse_datetime

from . import contracts, metrics, signing
from .envelope import ENVELOPE_FIELDS, Poison, check_contract, parse_envelope, payload_hash
from .logs import log_context
from .models import ProcessedEvent
from .services import consumer_failure_record

logger = logging.getLogger(__name__)

Handler = Callable[["Event"], None]
HANDLERS: dict[str, dict[str, Handler]] = {}

__all__ = ["ENVELOPE_FIELDS", "Event", "Outcome", "Poison", "handles", "parse_envelope", "process_message"]

HANDLED, DUPLICATE, UNHANDLED, FAILED, POISON = "handled", "duplicate", "unhandled_type", "failed", "rejected"


@dataclass(frozen=True)
class Event:
    """What a handler receives: the validated envelope."""

    id: uuid.UUID
    type: str
    schema_version: int
    occurred_at: datetime
    producer: str
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    data: dict[str, Any]
    replayed: bool = False


def handles(event_type: str, *, consumer: str | None = None) -> Callable[[Handler], Handler]:
    """Register ``fn`` as ``consumer``'s handler for ``event_type`` (one per pair)."""

    def register(fn: Handler) -> Handler:
        name = consumer or fn.__module__.split(".")[0]
        if event_type not in contracts.REGISTRY:
            raise ValueError(f"{fn.__qualname__}: unknown event type {event_type!r}")
        existing = HANDLERS.setdefault(name, {}).get(event_type)
        if existing is not None and existing is not fn:
            raise ValueError(f"{name} already handles {event_type!r} with {existing.__qualname__}")
        HANDLERS[name][event_type] = fn
        return fn

    return register


@dataclass
class Outcome:
    result: str  # handled | duplicate | unhandled_type | failed | rejected
    event_id: str = ""
    event_type: str = ""
    aggregate_id: str = ""
    reason: str = ""

    @property
    def delete(self) -> bool:
        """Whether the message is done with (deleted from its queue)."""
        return self.result in (HANDLED, DUPLICATE, UNHANDLED)


def process_message(
    consumer: str,
    body: str | bytes,
    *,
    message_id: str = "",
    receive_count: int = 1,
    attributes: dict[str, Any] | None = None,
) -> Outcome:
    """Run ``consumer``'s handler for one message body. Never raises (see module doc).

    The message must be signed by a current key (``attributes``: its SQS message attributes)
    and its envelope must fit the contract of its type (producer, aggregate type, data).
    """
    with log_context(consumer=consumer, sqs_message_id=message_id):
        started = time.perf_counter()
        envelope: dict[str, Any] = {}
        try:
            try:
                signing.verify(body, attributes)
                envelope = parse_envelope(body)
                check_contract(envelope)
            except (Poison, signing.SignatureError) as exc:
                return _poisoned(consumer, message_id, str(exc), envelope or _best_effort(body))
            with log_context(event_id=envelope["id"], event_type=envelope["type"]):
                return _dispatch(consumer, envelope, started, message_id, receive_count, attributes)
        except Exception as exc:  # noqa: BLE001 - the promise: never raise, whatever arrives
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            logger.exception("unexpected error while processing a message; it will come back")
            consumer_failure_record(
                consumer=consumer, message_id=message_id, envelope=envelope, error=reason, poisoned=False
            )
            event_id, event_type = str(envelope.get("id", ""))[:64], str(envelope.get("type", ""))[:100]
            return Outcome(FAILED, event_id, event_type, "", reason)


def _best_effort(body: str | bytes) -> dict[str, Any]:
    """The envelope of a message refused before parsing (unsigned...), for the failure record only."""
    try:
        return parse_envelope(body)
    except Exception:  # noqa: BLE001 - anything unparseable is recorded without its fields
        return {}


def _dispatch(
    consumer: str,
    envelope: dict[str, Any],
    started: float,
    message_id: str,
    receive_count: int,
    attributes: dict[str, Any] | None,
) -> Outcome:
    event_type = envelope["type"]
    handler = HANDLERS.get(consumer, {}).get(event_type)
    if handler is None:
        metrics.EVENTS_HANDLED.labels(consumer, event_type[:100], UNHANDLED).inc()
        logger.info(
            "no handler for this event type; acknowledged",
            extra={
                "consumer": consumer,
                "event_id": envelope["id"],
                "event_type": event_type,
                "sqs_message_id": message_id,
            },
        )
        return Outcome(UNHANDLED, envelope["id"], event_type, envelope["aggregate_id"])
    try:
        contracts.get(event_type).validate(envelope["data"], envelope["schema_version"])
    except contracts.ContractError as exc:
        return _poisoned(consumer, message_id, str(exc), envelope)
    event = Event(
        id=uuid.UUID(envelope["id"]),
        type=event_type,
        schema_version=envelope["schema_version"],
        occurred_at=parse_datetime(envelope["occurred_at"]),  # type: ignore[arg-type] # checked by the parser
        producer=envelope["producer"],
        aggregate_type=envelope["aggregate_type"],
        aggregate_id=envelope["aggregate_id"],
        aggregate_version=envelope["aggregate_version"],
        data=envelope["data"],
        replayed=((attributes or {}).get("replayed") or {}).get("StringValue") == "true",
    )
    digest = payload_hash(envelope)
    log = {
        "consumer": consumer,
        "event_id": envelope["id"],
        "event_type": event_type,
        "sqs_message_id": message_id,
    }
    try:
        with transaction.atomic():
            try:
                with transaction.atomic():
                    ProcessedEvent.objects.create(
                        consumer=consumer, event_id=event.id, event_type=event_type, payload_hash=digest
                    )
            except IntegrityError:
                seen = ProcessedEvent.objects.get(consumer=consumer, event_id=event.id)
                if seen.payload_hash != digest:
                    raise Poison(
                        f"event id reused with different data: processed payload sha256 {seen.payload_hash}, "
                        f"this payload sha256 {digest}"
                    ) from None
                metrics.EVENTS_HANDLED.labels(consumer, event_type, DUPLICATE).inc()
                logger.info("duplicate event; acknowledged without running effects", extra=log)
                return Outcome(DUPLICATE, envelope["id"], event_type, event.aggregate_id)
            handler(event)
    except Poison as exc:
        return _poisoned(consumer, message_id, str(exc), envelope)
    except Exception as exc:  # noqa: BLE001 - any handler failure means "try again later"
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        metrics.EVENTS_HANDLED.labels(consumer, event_type, FAILED).inc()
        logger.warning(
            "handler failed (receive %d); the message will come back", receive_count, extra=log, exc_info=True
        )
        consumer_failure_record(
            consumer=consumer, message_id=message_id, envelope=envelope, error=reason, poisoned=False
        )
        return Outcome(FAILED, envelope["id"], event_type, event.aggregate_id, reason)
    duration = time.perf_counter() - started
    metrics.EVENTS_HANDLED.labels(consumer, event_type, HANDLED).inc()
    metrics.HANDLER_DURATION.labels(consumer, event_type).observe(duration)
    logger.debug("handled in %.1f ms", duration * 1000, extra=log)
    return Outcome(HANDLED, envelope["id"], event_type, event.aggregate_id)


def _poisoned(consumer: str, message_id: str, reason: str, envelope: dict[str, Any]) -> Outcome:
    event_type = str(envelope.get("type", "?"))[:100] if envelope else "?"
    metrics.EVENTS_HANDLED.labels(consumer, event_type, POISON).inc()
    logger.error(
        "rejected message to the DLQ: %s",
        reason,
        extra={
            "consumer": consumer,
            "sqs_message_id": message_id,
            "event_id": envelope.get("id", ""),
            "event_type": event_type,
        },
    )
    consumer_failure_record(
        consumer=consumer, message_id=message_id, envelope=envelope, error=reason, poisoned=True
    )
    return Outcome(
        POISON,
        str(envelope.get("id", ""))[:64],
        event_type,
        str(envelope.get("aggregate_id", ""))[:64],
        reason,
    )
