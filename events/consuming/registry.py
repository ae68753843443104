"""The handler registry: which function handles which event type for which consumer.

Handlers live in each consuming app's ``consumers.py`` and are registered per event type::

    @handles("invoice.issued")
    def payment_create_on_invoice_issued(event: Event) -> None: ...

The consumer name defaults to the handler's app (its top-level package), which is also the
name of the app's queue in ``events/topology/resources.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import contracts

Handler = Callable[["Event"], None]
HANDLERS: dict[str, dict[str, Handler]] = {}


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


def handler_for(consumer: str, event_type: str) -> Handler | None:
    return HANDLERS.get(consumer, {}).get(event_type)
