"""Topology: every SNS topic and SQS queue, declared once (``resources``), created idempotently
(``provisioning``, with CloudWatch alarms), guarded by queue policies (``policies``), reached
through one set of AWS clients configured from settings (``aws``).
"""

from .resources import (
    AGREEMENTS,
    ALERTS,
    ALL_EVENTS,
    EVENT_QUEUES,
    INVOICING,
    PAYMENTS,
    TOPICS,
    EventQueue,
    QueueSpec,
    SubscriptionSpec,
    Topology,
    build,
    celery_queue_names,
    event_queue_name,
    prefixed,
    task_queue_name,
    topic_name,
)

__all__ = [
    "AGREEMENTS",
    "ALERTS",
    "ALL_EVENTS",
    "EVENT_QUEUES",
    "INVOICING",
    "PAYMENTS",
    "TOPICS",
    "EventQueue",
    "QueueSpec",
    "SubscriptionSpec",
    "Topology",
    "build",
    "celery_queue_names",
    "event_queue_name",
    "prefixed",
    "task_queue_name",
    "topic_name",
]
