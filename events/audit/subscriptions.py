"""What a consumer should have: per producer, the event types its subscriptions deliver.

Read from the declared topology (``events/topology/resources.py``), filter policies included: a
subscription listing types delivers only those; one without a filter (``ALL_EVENTS``) delivers
every type its topic's producer has a contract for. A delivered type the consumer has no handler
for is acknowledged unread (no processed-event row can prove it), so it is reported, not audited.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from .. import contracts
from ..consuming.registry import handler_for
from ..topology import EVENT_QUEUES, EventQueue


class UnknownConsumer(ValueError):
    """No consumer queue of that name is declared."""


@dataclass(frozen=True)
class Plan:
    consumer: str
    by_producer: dict[str, tuple[str, ...]]  # producer (its topic) -> event types audited
    not_audited: tuple[str, ...]  # delivered, but the consumer has no handler: acknowledged unread

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(t for types in self.by_producer.values() for t in types)


def event_queues() -> tuple[EventQueue, ...]:
    return (*EVENT_QUEUES, *settings.EXTRA_EVENT_QUEUES)


def consumer_names() -> list[str]:
    return [eq.consumer for eq in event_queues()]


def plan(consumer: str) -> Plan:
    """The event types ``consumer``'s subscriptions deliver, per producer (UnknownConsumer if none)."""
    declared = {eq.consumer: eq for eq in event_queues()}
    if consumer not in declared:
        raise UnknownConsumer(f"no consumer {consumer!r}; consumers: {', '.join(sorted(declared))}")
    by_producer: dict[str, tuple[str, ...]] = {}
    skipped: list[str] = []
    for producer, wanted in declared[consumer].subscriptions.items():
        delivered = wanted or tuple(
            sorted(name for name, t in contracts.REGISTRY.items() if t.producer == producer)
        )
        audited = tuple(t for t in delivered if handler_for(consumer, t) is not None)
        skipped += [t for t in delivered if t not in audited]
        if audited:
            by_producer[producer] = by_producer.get(producer, ()) + audited
    return Plan(consumer, by_producer, tuple(sorted(skipped)))
