"""The one declarative description of every SNS topic and SQS queue.

``messaging_provision`` creates exactly this, idempotently, on moto or AWS.
Later work extends it here (and only here): a new consumer is one more
``EventQueue`` with the topics and event types it subscribes to.

Names: every resource starts with ``settings.RESOURCE_PREFIX`` so several
environments can share an AWS account.
  topic        {prefix}{topic}                      e.g. billing-dev-agreements
  event queue  {prefix}{consumer}-events            e.g. billing-dev-invoicing-events
  task queue   {prefix}celery-{queue}               e.g. billing-dev-celery-payments
  DLQ          <queue name>-dlq
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings

# Producers' topics. An event is published to the topic of its producer.
AGREEMENTS = "agreements"
INVOICING = "invoicing"
PAYMENTS = "payments"
ALERTS = "alerts"
TOPICS: tuple[str, ...] = (AGREEMENTS, INVOICING, PAYMENTS, ALERTS)

ALL_EVENTS: tuple[str, ...] = ()  # subscribe without a filter policy


@dataclass(frozen=True)
class EventQueue:
    """One consumer's SQS queue and the events it subscribes to, per topic.

    ``subscriptions`` maps a topic to the event types wanted from it
    (a filter policy on the ``event_type`` message attribute), or to
    ``ALL_EVENTS`` for everything the topic carries.
    """

    consumer: str
    subscriptions: dict[str, tuple[str, ...]]
    visibility_timeout: int | None = None  # default: MESSAGING_EVENT_VISIBILITY_TIMEOUT


@dataclass(frozen=True)
class QueueSpec:
    """A concrete SQS queue to provision (with its DLQ)."""

    name: str  # full name, prefixed
    visibility_timeout: int
    max_receive_count: int
    retention_seconds: int
    dlq_retention_seconds: int
    kind: str  # "events" or "tasks"
    consumer: str = ""

    @property
    def dlq_name(self) -> str:
        return f"{self.name}-dlq"


@dataclass(frozen=True)
class SubscriptionSpec:
    topic: str  # full topic name
    queue: str  # full queue name
    event_types: tuple[str, ...]

    def filter_policy(self) -> dict[str, list[str]] | None:
        if not self.event_types:
            return None
        return {"event_type": sorted(self.event_types)}


@dataclass(frozen=True)
class Topology:
    topics: tuple[str, ...]
    queues: tuple[QueueSpec, ...]
    subscriptions: tuple[SubscriptionSpec, ...]
    email_subscriptions: tuple[tuple[str, str], ...] = field(default=())  # (topic, address)

    def queue(self, name: str) -> QueueSpec:
        for q in self.queues:
            if name in (q.name, q.consumer, q.dlq_name):
                return q
        raise KeyError(name)


# The consumers. Event type names are the contracts (see events/contracts.py).
EVENT_QUEUES: tuple[EventQueue, ...] = (
    EventQueue(
        consumer="invoicing",
        subscriptions={
            AGREEMENTS: (
                "agreement.created",
                "agreement.price_changed",
                "agreement.paused",
                "agreement.resumed",
                "agreement.cancelled",
            ),
            PAYMENTS: ("payment.succeeded", "payment.failed"),
        },
    ),
    EventQueue(
        consumer="payments",
        subscriptions={INVOICING: ("invoice.issued", "invoice.voided", "credit_note.issued")},
    ),
    # Locally the alerts topic also feeds a queue whose handler sends e-mail.
    EventQueue(consumer="alerts_mail", subscriptions={ALERTS: ALL_EVENTS}),
)


def prefixed(name: str) -> str:
    return f"{settings.RESOURCE_PREFIX}{name}"


def topic_name(topic: str) -> str:
    return prefixed(topic)


def event_queue_name(consumer: str) -> str:
    return prefixed(f"{consumer}-events")


def task_queue_name(queue: str) -> str:
    return prefixed(f"celery-{queue}")


def celery_queue_names() -> list[str]:
    return [q.name for q in settings.CELERY_TASK_QUEUES]


def build(event_queues: Iterable[EventQueue] | None = None) -> Topology:
    """Resolve the description against the current settings into concrete names."""
    if event_queues is None:
        event_queues = (*EVENT_QUEUES, *settings.EXTRA_EVENT_QUEUES)
    max_receive = settings.MESSAGING_MAX_RECEIVE_COUNT
    retention = settings.MESSAGING_RETENTION_SECONDS
    dlq_retention = settings.MESSAGING_DLQ_RETENTION_SECONDS
    queues: list[QueueSpec] = []
    subscriptions: list[SubscriptionSpec] = []
    for eq in event_queues:
        name = event_queue_name(eq.consumer)
        queues.append(
            QueueSpec(
                name=name,
                visibility_timeout=eq.visibility_timeout or settings.MESSAGING_EVENT_VISIBILITY_TIMEOUT,
                max_receive_count=max_receive,
                retention_seconds=retention,
                dlq_retention_seconds=dlq_retention,
                kind="events",
                consumer=eq.consumer,
            )
        )
        for topic, types in eq.subscriptions.items():
            subscriptions.append(SubscriptionSpec(topic_name(topic), name, tuple(types)))
    for q in celery_queue_names():
        queues.append(
            QueueSpec(
                name=task_queue_name(q),
                visibility_timeout=settings.CELERY_VISIBILITY_TIMEOUT,
                max_receive_count=max_receive,
                retention_seconds=retention,
                dlq_retention_seconds=dlq_retention,
                kind="tasks",
                consumer=f"celery-{q}",
            )
        )
    emails = tuple((topic_name(ALERTS), addr) for addr in settings.ALERT_EMAILS)
    return Topology(
        topics=tuple(topic_name(t) for t in TOPICS),
        queues=tuple(queues),
        subscriptions=tuple(subscriptions),
        email_subscriptions=emails,
    )
