"""The handler registry: which function handles which event type for which consumer.

Handlers live in each consuming app's ``consumers.py`` and are registered per event type::

    @handles("invoice.issued")
    def payment_create_on_invoice_issued(event: Event) -> None: ...

A handler that can apply several events at once registers with ``handles_batch`` and takes a
list (the events of one SQS receive, in receive order; one event when a message is handled on
its own, e.g. after its batch failed)::

    @handles_batch("agreement.created", "agreement.cancelled")
    def agreement_project(events: list[Event]) -> None: ...

Its contract is the per-event one: applying the list must have the same effects as applying
its events one at a time, in that order, each in its own transaction (two events about the
same aggregate included). It must not catch its own errors: any exception rolls the whole
batch back and the runtime handles the events one at a time instead.

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
BatchHandler = Callable[[list["Event"]], None]
# Every handler per consumer and event type, batch handlers as a one-event call.
HANDLERS: dict[str, dict[str, Handler]] = {}
BATCH_HANDLERS: dict[str, dict[str, BatchHandler]] = {}


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


def _register(name: str, event_type: str, fn: Handler, qualname: str) -> None:
    if event_type not in contracts.REGISTRY:
        raise ValueError(f"{qualname}: unknown event type {event_type!r}")
    existing = HANDLERS.setdefault(name, {}).get(event_type)
    if existing is not None and getattr(existing, "registered", existing) is not getattr(
        fn, "registered", fn
    ):
        raise ValueError(f"{name} already handles {event_type!r} with {existing.__qualname__}")
    HANDLERS[name][event_type] = fn


def handles(event_type: str, *, consumer: str | None = None) -> Callable[[Handler], Handler]:
    """Register ``fn`` as ``consumer``'s handler for ``event_type`` (one per pair)."""

    def register(fn: Handler) -> Handler:
        _register(consumer or fn.__module__.split(".")[0], event_type, fn, fn.__qualname__)
        return fn

    return register


def handles_batch(*event_types: str, consumer: str | None = None) -> Callable[[BatchHandler], BatchHandler]:
    """Register ``fn(events)`` as ``consumer``'s handler for each of ``event_types`` (see the module doc)."""

    def register(fn: BatchHandler) -> BatchHandler:
        name = consumer or fn.__module__.split(".")[0]

        def one(event: Event) -> None:
            fn([event])

        one.__qualname__ = fn.__qualname__
        one.registered = fn  # type: ignore[attr-defined] # the same registration, seen twice
        for event_type in event_types:
            _register(name, event_type, one, fn.__qualname__)
            BATCH_HANDLERS.setdefault(name, {})[event_type] = fn
        return fn

    return register


def handler_for(consumer: str, event_type: str) -> Handler | None:
    return HANDLERS.get(consumer, {}).get(event_type)


def batch_handler_for(consumer: str, event_type: str) -> BatchHandler | None:
    return BATCH_HANDLERS.get(consumer, {}).get(event_type)


def takes_batches(consumer: str) -> bool:
    """Whether some handler of ``consumer`` applies several events at once."""
    return bool(BATCH_HANDLERS.get(consumer))
