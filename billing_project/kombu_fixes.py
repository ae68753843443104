"""A fix for kombu's SQS transport, applied when the Celery app is imported.

kombu 5.7: when a ReceiveMessage of the worker's async poller ends in a timeout, a 5xx or an
unreachable endpoint, ``AsyncSQSConnection._on_list_ready`` answers ``[]`` ("no messages",
so the worker keeps going: kombu PR #1173), but ``Channel._on_messages_ready`` then calls
``messages.get("Messages")`` on that list. The AttributeError is an "Unrecoverable error":
the worker process exits on the first blip of the SQS endpoint. Found by the scenario
harness (a 60-second endpoint outage killed every worker within seconds).

The fix treats such an answer as what kombu meant it to be: no messages this time.
Remove it once kombu handles the list itself.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import SQS

_original = SQS.Channel._on_messages_ready


def _on_messages_ready(self: Any, queue: Any, qname: str, messages: Any) -> Any:
    if not isinstance(messages, dict):  # kombu's "timeout / 5xx / unreachable" answer
        return 0
    return _original(self, queue, qname, messages)


def apply() -> None:
    if SQS.Channel._on_messages_ready is not _on_messages_ready:
        SQS.Channel._on_messages_ready = _on_messages_ready
