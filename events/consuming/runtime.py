"""The consumer runtime: what happens to one SQS message, for one consumer. Never raises.

``ConsumerRuntime.process`` (and ``process_message``) is the whole contract, used by push and
pull mode alike:

- unsigned, signed with an unknown or retired key, or badly signed (events/signing.py) / not
  JSON / not an object / missing, ill-typed or out-of-range envelope fields (events/envelope.py)
  / a known type from the wrong producer or about the wrong aggregate type / unknown
  ``schema_version`` / data off its schema / same id with different data: ``POISON`` -> logged
  with the reason and SQS message id, recorded as a consumer failure, sent to the DLQ at once
  (the messages behind it are not held up);
- an event type this consumer has no handler for: acknowledged and counted;
- already processed by this consumer: acknowledged, effects not run again;
- otherwise the handler runs in a transaction that also writes the processed-event record,
  with a statement and lock timeout (``CONSUMER_HANDLER_TIMEOUT_SECONDS``) so a handler stuck on
  the database gives its thread back; if it raises, nothing is committed and the message comes
  back after ``retry_delay`` (after ``maxReceiveCount`` receives SQS moves it to the DLQ).

A consumer whose handlers take batches gets the same outcome for every message, decided by the
same steps (``prepare``, then a transaction for the batch): events/consuming/batch.py.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils.dateparse import parse_datetime

from core.backoff import backoff
from core.db import connection_lost

from .. import contracts, signing
from ..envelope import Poison, check_contract, parse_envelope, payload_hash
from ..operations import metrics
from ..operations.logs import log_context
from ..topology.aws import BATCH_MAX_ENTRIES
from .failures import record_failure
from .processed import Record, processed_hashes, record_processed
from .registry import Event, handler_for

logger = logging.getLogger(__name__)

HANDLED, DUPLICATE, UNHANDLED, FAILED, POISON = "handled", "duplicate", "unhandled_type", "failed", "rejected"


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


@dataclass(frozen=True)
class Admitted:
    """A message whose handler is to run: its event, payload hash, envelope and SQS message id."""

    event: Event
    digest: str
    envelope: dict[str, Any]
    message_id: str

    @property
    def record(self) -> Record:
        return Record(self.event.id, self.event.type, self.digest)


def reused_reason(processed_hash: str, this_hash: str) -> str:
    return (
        "event id reused with different data: processed payload sha256 "
        f"{processed_hash}, this payload sha256 {this_hash}"
    )


class ConsumerRuntime:
    """One consumer's handling of messages (in the spirit of Zulip's queue workers): the outcomes,
    the handler timeout, failure bookkeeping, the retry backoff and the batch limit live here,
    the same for push and pull."""

    batch_max = BATCH_MAX_ENTRIES  # SQS: at most 10 messages per receive and per delete

    def __init__(self, name: str) -> None:
        self.name = name

    # -- the contract ---------------------------------------------------------------------
    def process(
        self,
        body: str | bytes,
        *,
        message_id: str = "",
        receive_count: int = 1,
        attributes: dict[str, Any] | None = None,
    ) -> Outcome:
        """Handle one message body (see the module doc). Never raises."""
        started = time.perf_counter()
        with log_context(consumer=self.name, sqs_message_id=message_id):
            try:
                prepared = self.prepare(body, message_id=message_id, attributes=attributes)
            except Exception as exc:  # noqa: BLE001 - the promise: never raise, whatever arrives
                return self._unexpected(exc, message_id, {})
        if isinstance(prepared, Outcome):
            return prepared
        return self.process_admitted(prepared, receive_count=receive_count, started=started)

    def process_admitted(
        self, admitted: Admitted, *, receive_count: int = 1, started: float = 0.0
    ) -> Outcome:
        """Run the handler of a message ``prepare`` admitted, in its own transaction. Never raises."""
        envelope = admitted.envelope
        with log_context(
            consumer=self.name,
            sqs_message_id=admitted.message_id,
            event_id=envelope["id"],
            event_type=envelope["type"],
        ):
            try:
                return self._run_one(admitted, started or time.perf_counter(), receive_count)
            except Exception as exc:  # noqa: BLE001 - the promise: never raise, whatever arrives
                return self._unexpected(exc, admitted.message_id, envelope)

    def _unexpected(self, exc: Exception, message_id: str, envelope: dict[str, Any]) -> Outcome:
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        logger.exception("unexpected error while processing a message; it will come back")
        self.record_failure(message_id, envelope, reason, poisoned=False)
        event_id, event_type = str(envelope.get("id", ""))[:64], str(envelope.get("type", ""))[:100]
        return Outcome(FAILED, event_id, event_type, "", reason)

    def prepare(
        self, body: str | bytes, *, message_id: str = "", attributes: dict[str, Any] | None = None
    ) -> Outcome | Admitted:
        """Everything decided before a handler runs: signature, envelope, contract, handler, data.
        Poison and unhandled types are final outcomes here; the rest is admitted."""
        envelope: dict[str, Any] = {}
        try:
            signing.verify(body, attributes)
            envelope = parse_envelope(body)
            check_contract(envelope)
        except (Poison, signing.SignatureError) as exc:
            return self.poisoned(message_id, str(exc), envelope or _best_effort(body))
        return self.admit(envelope, message_id, attributes)

    def retry_delay(self, receive_count: int) -> float:
        """When a failed message is seen again: grows with its receives, no jitter (SQS counts)."""
        return backoff(
            receive_count,
            base=settings.CONSUMER_RETRY_BASE_SECONDS,
            maximum=settings.CONSUMER_RETRY_MAX_SECONDS,
            jitter=False,
        )

    @property
    def handler_timeout_ms(self) -> int:
        """The statement and lock timeout of a handler's transaction (0: none), set with its
        processed-event record: a handler waiting on a lock or a slow statement fails after it
        (and its message comes back) instead of holding a handler thread forever."""
        return max(0, int(settings.CONSUMER_HANDLER_TIMEOUT_SECONDS * 1000))

    # -- steps ----------------------------------------------------------------------------
    def admit(
        self, envelope: dict[str, Any], message_id: str, attributes: dict[str, Any] | None
    ) -> Outcome | Admitted:
        """A parsed envelope's fate before any effect: unhandled, poison (data off its schema),
        or admitted (its handler's ``Event`` and payload hash)."""
        event_type = envelope["type"]
        if handler_for(self.name, event_type) is None:
            metrics.EVENTS_HANDLED.labels(self.name, event_type[:100], UNHANDLED).inc()
            logger.info("no handler for this event type; acknowledged", extra=self._log(envelope, message_id))
            return Outcome(UNHANDLED, envelope["id"], event_type, envelope["aggregate_id"])
        try:
            contracts.get(event_type).validate(envelope["data"], envelope["schema_version"])
        except contracts.ContractError as exc:
            return self.poisoned(message_id, str(exc), envelope)
        event = Event(
            id=uuid.UUID(envelope["id"]),
            type=event_type,
            schema_version=envelope["schema_version"],
            occurred_at=parse_datetime(envelope["occurred_at"]),  # type: ignore[arg-type] # parser checked it
            producer=envelope["producer"],
            aggregate_type=envelope["aggregate_type"],
            aggregate_id=envelope["aggregate_id"],
            aggregate_version=envelope["aggregate_version"],
            data=envelope["data"],
            replayed=((attributes or {}).get("replayed") or {}).get("StringValue") == "true",
        )
        return Admitted(event, payload_hash(envelope), envelope, message_id)

    def _run_one(self, admitted: Admitted, started: float, receive_count: int) -> Outcome:
        """The handler of one admitted message, in its own transaction with its processed record."""
        event, envelope, message_id = admitted.event, admitted.envelope, admitted.message_id
        handler = handler_for(self.name, event.type)
        assert handler is not None  # admitted
        ran_on: list[Any] = []  # the driver connection the transaction ran on, once it began
        try:
            try:
                return self._apply(admitted, handler, started, ran_on)
            except (OperationalError, InterfaceError):
                if not connection_lost(ran_on[0] if ran_on else None):
                    raise
                # The server dropped the connection the transaction ran on (Django opened
                # another as the block ended). Nothing of this message is applied unless its
                # COMMIT went through, and then its processed record makes the next run a
                # duplicate: once more on the new connection, rather than a retry a backoff later.
                logger.warning(
                    "the database connection was lost while handling; handling it once more",
                    extra=self._log(envelope, message_id),
                    exc_info=True,
                )
            return self._apply(admitted, handler, started, [])
        except Poison as exc:
            return self.poisoned(message_id, str(exc), envelope)
        except Exception as exc:  # noqa: BLE001 - any handler failure means "try again later"
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            metrics.EVENTS_HANDLED.labels(self.name, event.type, FAILED).inc()
            logger.warning(
                "handler failed (receive %d); the message will come back",
                receive_count,
                extra=self._log(envelope, message_id),
                exc_info=True,
            )
            self.record_failure(message_id, envelope, reason, poisoned=False)
            return Outcome(FAILED, envelope["id"], event.type, event.aggregate_id, reason)

    def _apply(self, admitted: Admitted, handler: Any, started: float, ran_on: list[Any]) -> Outcome:
        """The handler and the processed record in one transaction: handled, or a duplicate."""
        event, digest = admitted.event, admitted.digest
        with transaction.atomic():
            ran_on.append(connection.connection)  # after BEGIN: the one Django's health check kept
            new = record_processed(self.name, [admitted.record], timeout_ms=self.handler_timeout_ms)
            if new:
                handler(event)
            else:
                seen = processed_hashes(self.name, [event.id])[event.id]
        if new:
            return self.handled(admitted, time.perf_counter() - started)
        if seen != digest:
            raise Poison(reused_reason(seen, digest))
        return self.duplicate(admitted)

    def handled(self, admitted: Admitted, duration: float) -> Outcome:
        event = admitted.event
        metrics.EVENTS_HANDLED.labels(self.name, event.type, HANDLED).inc()
        metrics.HANDLER_DURATION.labels(self.name, event.type).observe(duration)
        logger.debug(
            "handled in %.1f ms", duration * 1000, extra=self._log(admitted.envelope, admitted.message_id)
        )
        return Outcome(HANDLED, admitted.envelope["id"], event.type, event.aggregate_id)

    def duplicate(self, admitted: Admitted) -> Outcome:
        event = admitted.event
        metrics.EVENTS_HANDLED.labels(self.name, event.type, DUPLICATE).inc()
        logger.info(
            "duplicate event; acknowledged without running effects",
            extra=self._log(admitted.envelope, admitted.message_id),
        )
        return Outcome(DUPLICATE, admitted.envelope["id"], event.type, event.aggregate_id)

    def _log(self, envelope: dict[str, Any], message_id: str) -> dict[str, Any]:
        return {
            "consumer": self.name,
            "event_id": envelope["id"],
            "event_type": envelope["type"],
            "sqs_message_id": message_id,
        }

    def poisoned(self, message_id: str, reason: str, envelope: dict[str, Any]) -> Outcome:
        event_type = str(envelope.get("type", "?"))[:100] if envelope else "?"
        # a label per type the contracts know, not per type a forged body names: unbounded series
        metrics.EVENTS_HANDLED.labels(
            self.name, event_type if event_type in contracts.REGISTRY else "?", POISON
        ).inc()
        logger.error(
            "rejected message to the DLQ: %s",
            reason,
            extra={
                "consumer": self.name,
                "sqs_message_id": message_id,
                "event_id": envelope.get("id", ""),
                "event_type": event_type,
            },
        )
        self.record_failure(message_id, envelope, reason, poisoned=True)
        return Outcome(
            POISON,
            str(envelope.get("id", ""))[:64],
            event_type,
            str(envelope.get("aggregate_id", ""))[:64],
            reason,
        )

    def record_failure(
        self, message_id: str, envelope: dict[str, Any], error: str, *, poisoned: bool
    ) -> None:
        record_failure(self.name, message_id, envelope, error, poisoned=poisoned)


def process_message(
    consumer: str,
    body: str | bytes,
    *,
    message_id: str = "",
    receive_count: int = 1,
    attributes: dict[str, Any] | None = None,
) -> Outcome:
    """Run ``consumer``'s handler for one message body. Never raises (see the module doc)."""
    return ConsumerRuntime(consumer).process(
        body, message_id=message_id, receive_count=receive_count, attributes=attributes
    )


def _best_effort(body: str | bytes) -> dict[str, Any]:
    """The envelope of a message refused before parsing (unsigned...), for the failure record only."""
    try:
        return parse_envelope(body)
    except Exception:  # noqa: BLE001 - anything unparseable is recorded without its fields
        return {}
