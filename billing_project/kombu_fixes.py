"""Fixes for kombu 5.7's SQS transport, applied when the Celery app is imported.

Two ways a failed ReceiveMessage of the worker's async poller made the worker exit with
"Unrecoverable error" (the exception escapes into the event loop):

1. A timeout, a 5xx or an unreachable endpoint: ``AsyncSQSConnection._on_list_ready`` answers
   ``[]`` ("no messages", so the worker keeps going: kombu PR #1173), but
   ``Channel._on_messages_ready`` then calls ``messages.get("Messages")`` on that list. Found by
   the scenario harness (a 60-second endpoint outage killed every worker within seconds).
2. Any 4xx: ``_on_list_ready`` raises a bare ``Exception``. ``QueueDoesNotExist`` when a queue was
   deleted or the endpoint came back without its queues; on AWS also ``AccessDenied`` (a policy
   change) and ``ExpiredToken`` (credentials not refreshed in time).

Here both are a failed poll of that one queue: the worker keeps running and consuming its other
queues, polls the failing one again after a growing delay (1 s doubling to 30 s), logs what is
wrong at most once a minute per queue (not a line per poll), and consumes again as soon as a
receive succeeds (e.g. once ``messaging_provision`` recreated the queue). ``/readyz`` and the
``queues_missing`` monitoring check tell operators about a missing queue.

Remove these once kombu handles the list and 4xx answers itself.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.response import get_response
from kombu.asynchronous.aws.sqs.connection import AsyncSQSConnection
from kombu.transport import SQS

logger = logging.getLogger(__name__)

BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
LOG_EVERY_SECONDS = 60.0

# What an operator can do about the usual causes (error codes of the query and JSON protocols).
_MISSING = "run messaging_provision"
_DENIED = "check the worker's IAM permissions and the queue policy"
_EXPIRED = "the worker's AWS credentials expired; check how they are refreshed (instance role, env)"
HINTS = {
    "QueueDoesNotExist": _MISSING,
    "AWS.SimpleQueueService.NonExistentQueue": _MISSING,
    "AccessDenied": _DENIED,
    "AccessDeniedException": _DENIED,
    "ExpiredToken": _EXPIRED,
    "ExpiredTokenException": _EXPIRED,
}


@dataclass(frozen=True)
class ReceiveFailed:
    """A ReceiveMessage that SQS refused (4xx), in place of kombu's exception: why, for the log."""

    status: int
    code: str
    message: str

    def __str__(self) -> str:
        hint = HINTS.get(self.code)
        return f"HTTP {self.status} {self.code}: {self.message}" + (f" ({hint})" if hint else "")


@dataclass
class _Failing:
    """One queue's run of failed polls."""

    failures: int = 0
    logged_at: float = float("-inf")

    def delay(self) -> float:
        return min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** max(0, self.failures - 1))


def _failing(channel: Any) -> dict[str, _Failing]:
    # Per channel (one per worker connection), keyed by kombu's queue name; only the event loop
    # thread touches it.
    try:
        return channel._billing_failing  # type: ignore[no-any-return]
    except AttributeError:
        channel._billing_failing = {}
        return channel._billing_failing  # type: ignore[no-any-return]


def _failed(channel: Any, queue: str, reason: str) -> None:
    state = _failing(channel).setdefault(queue, _Failing())
    state.failures += 1
    now = time.monotonic()
    if now - state.logged_at >= LOG_EVERY_SECONDS:
        state.logged_at = now
        logger.warning(
            "Celery queue %s: ReceiveMessage failed %d time(s) in a row: %s. Polling it again with "
            "backoff (up to %.0fs); logged at most once a minute while it lasts.",
            channel.canonical_queue_name(queue),
            state.failures,
            reason,
            BACKOFF_MAX_SECONDS,
        )


def _recovered(channel: Any, queue: str) -> None:
    state = _failing(channel).pop(queue, None)
    if state is not None:
        logger.warning(
            "Celery queue %s: ReceiveMessage answers again after %d failed poll(s); consuming.",
            channel.canonical_queue_name(queue),
            state.failures,
        )


# -- the async connection: a 4xx on ReceiveMessage is an answer, not an exception ----------
_original_on_list_ready = AsyncSQSConnection._on_list_ready


def _on_list_ready(self: Any, parent: Any, markers: Any, operation: str, response: Any) -> Any:
    status = response.status
    if operation == "ReceiveMessage" and 400 <= status < 500 and status not in self.STATUS_CODES_TIMEOUT:
        return _receive_failed(self, operation, response)
    return _original_on_list_ready(self, parent, markers, operation, response)


def _receive_failed(connection: Any, operation: str, response: Any) -> ReceiveFailed:
    code, message = "", ""
    try:  # botocore parses the error body of either protocol (JSON or query XML)
        operation_model = connection.sqs_connection.meta.service_model.operation_model(operation)
        _, parsed = get_response(operation_model, response.response)
        code = str(parsed.get("Error", {}).get("Code", ""))
        message = str(parsed.get("Error", {}).get("Message", ""))
    except Exception:  # noqa: BLE001 - an unparsable body still gets reported, raw
        pass
    if not code and not message:
        message = repr(response.read())[:300]
    return ReceiveFailed(response.status, code or "error", message)


# -- the channel: a failed poll backs off that queue instead of crashing the worker -------------
_original_on_messages_ready = SQS.Channel._on_messages_ready
_original_loop1 = SQS.Channel._loop1
_original_schedule_queue = SQS.Channel._schedule_queue


def _on_messages_ready(self: Any, queue: Any, qname: str, messages: Any) -> Any:
    # kombu's names: ``queue`` is the queue URL, ``qname`` kombu's queue name.
    if isinstance(messages, dict):
        _recovered(self, qname)
        return _original_on_messages_ready(self, queue, qname, messages)
    if isinstance(messages, ReceiveFailed):
        _failed(self, qname, str(messages))
    else:  # kombu's [] for a timeout, a 5xx or an unreachable endpoint
        _failed(self, qname, "timeout, 5xx or unreachable endpoint")
    return 0


def _loop1(self: Any, queue: str, messages_fetched: Any = None) -> Any:
    state = _failing(self).get(queue)
    if state is None or messages_fetched:
        return _original_loop1(self, queue, messages_fetched)
    self.hub.call_later(state.delay(), self._schedule_queue, queue)
    return None


def _schedule_queue(self: Any, queue: str) -> Any:
    # Errors raised before the request is sent (resolving the queue URL, signing with credentials
    # that cannot be refreshed) never reach the callback: retry from here, after the backoff.
    try:
        return _original_schedule_queue(self, queue)
    except (BotoCoreError, ClientError, OSError) as exc:
        _failed(self, queue, f"{type(exc).__name__}: {exc}")
        self.hub.call_later(_failing(self)[queue].delay(), self._schedule_queue, queue)
        return None


def apply() -> None:
    """Install the fixes (idempotent)."""
    AsyncSQSConnection._on_list_ready = _on_list_ready
    SQS.Channel._on_messages_ready = _on_messages_ready
    SQS.Channel._loop1 = _loop1
    SQS.Channel._schedule_queue = _schedule_queue
