"""Celery entry points of the event backbone. Thin: call a service."""

from __future__ import annotations

import socket
from typing import Any

from celery import shared_task
from django.conf import settings

from core.task_options import IDEMPOTENT_DB_TASK

from .audit import delivery_audit_all
from .consuming.config import consumer_configs
from .consuming.pull import pull_once
from .operations.alerts import monitor_run
from .operations.chart import chart_refresh
from .operations.health import heartbeat_record
from .publishing.relay import relay_exclusive
from .publishing.relay_pass import relay_once
from .publishing.store import event_store_prune


@shared_task(name="events.heartbeat", bind=True, ignore_result=True, acks_late=True)
def heartbeat(self: Any, name: str = "beat") -> None:
    """Record that beat and a worker on the ``events`` queue are alive. Idempotent."""
    heartbeat_record(
        name=name,
        detail={"worker": self.request.hostname or socket.gethostname(), "task_id": self.request.id},
    )


@shared_task(name="events.relay_outbox", **IDEMPOTENT_DB_TASK)
def relay_outbox(self: Any) -> dict[str, int]:
    """Publish every due outbox row to SNS (after commits and as the periodic sweep).

    Idempotent; one runs at a time (a second returns at once: the first carries on), and rows
    are claimed with SKIP LOCKED besides.
    Publish failures are recorded on the rows and retried by a later sweep, not
    by retrying this task.
    """
    result = relay_exclusive()
    if result is None:
        return {"published": 0, "failed": 0, "running_elsewhere": 1}
    return {"published": result.published, "failed": result.failed}


@shared_task(name="events.prune_event_store", bind=True, ignore_result=True, acks_late=True)
def prune_event_store(self: Any) -> int:
    """Delete published events older than EVENT_RETENTION_DAYS, in batches. Idempotent."""
    return event_store_prune()


@shared_task(name="events.pull_consumer", bind=True, ignore_result=True, acks_late=True)
def pull_consumer(self: Any, consumer: str) -> dict[str, int]:
    """Pull mode: handle at most the consumer's batch size of messages. Idempotent (handlers are)."""
    cfg = consumer_configs().get(consumer)
    if cfg is None or cfg.mode != "pull":
        # Switched to push (or removed) since the schedule was made: nothing to do.
        return {"received": 0}
    result = pull_once(consumer)
    return {"received": result.received, **result.outcomes}


@shared_task(name="events.monitor", bind=True, ignore_result=True, acks_late=True)
def monitor(self: Any) -> list[str]:
    """Beat, on the ``monitoring`` queue (never behind bulk work): run the automated checks; record
    alert.* on a new breach, alert.resolved when cleared, and publish the alerts at once (only
    alerts: a backlog of domain events stays the relay's). Idempotent (one alert per breach)."""
    sent = monitor_run()
    if sent:
        relay_once(alerts_only=True)
    return sent


@shared_task(name="events.messaging_chart", bind=True, ignore_result=True, acks_late=True)
def messaging_chart(self: Any) -> None:
    """Beat, on the ``monitoring`` queue: count the Messaging page's 30-day chart, so the page
    never counts the event store itself. Idempotent."""
    chart_refresh()


@shared_task(name="events.delivery_audit", bind=True, ignore_result=True, acks_late=True)
def delivery_audit(self: Any) -> dict[str, int]:
    """Beat, on the ``monitoring`` queue: audit every consumer from its watermark, re-send what it
    lost (``DELIVERY_AUDIT_REPAIR``), raise or clear ``alert.delivery_gap`` and publish the alerts
    at once. Idempotent: it never applies an effect; re-sent events are skipped by consumers that
    have them. Returns the missing count per consumer."""
    reports = delivery_audit_all(repair=settings.DELIVERY_AUDIT_REPAIR)
    if any(r.alert for r in reports):
        relay_once(alerts_only=True)
    return {r.consumer: r.totals.missing for r in reports}
