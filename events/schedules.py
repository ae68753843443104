"""The event backbone's periodic tasks (synced into beat's tables by core.schedules)."""

from __future__ import annotations

from django.conf import settings

from core.schedules import Periodic

from .consuming.config import consumer_configs


def periodic_tasks() -> list[Periodic]:
    return [
        Periodic(
            name="Beat heartbeat",
            task="events.heartbeat",
            every_seconds=settings.HEARTBEAT_INTERVAL_SECONDS,
            kwargs={"name": "beat"},
            description="Proves beat and an events worker are alive (monitoring reads it).",
        ),
        Periodic(
            name="Outbox relay sweep",
            task="events.relay_outbox",
            every_seconds=settings.OUTBOX_SWEEP_SECONDS,
            description="Publishes outbox rows not yet published (after an outage, a crash, a retry).",
        ),
        Periodic(
            name="Event store pruning",
            task="events.prune_event_store",
            crontab={"minute": "17", "hour": "3"},
            description="Deletes published events older than EVENT_RETENTION_DAYS, in batches.",
        ),
        Periodic(
            name="Monitoring checks",
            task="events.monitor",
            every_seconds=settings.MONITOR_INTERVAL_SECONDS,
            description="DLQ depth, missing queues, oldest message age, outbox lag, and every app's checks.",
        ),
        Periodic(
            name="Delivery audit",
            task="events.delivery_audit",
            every_seconds=settings.DELIVERY_AUDIT_INTERVAL_SECONDS,
            description="Every consumer has every event it subscribes to (handled, dead-lettered or in "
            "flight); what it lost is re-sent to its queue, with alert.delivery_gap.",
        ),
        Periodic(
            name="Messaging chart",
            task="events.messaging_chart",
            every_seconds=settings.MESSAGING_CHART_SECONDS,
            description="Counts the Messaging page's 30-day chart (the page never counts the event store).",
        ),
        *(
            Periodic(
                name=f"Pull consumer: {cfg.name}",
                task="events.pull_consumer",
                every_seconds=cfg.interval_seconds,
                kwargs={"consumer": cfg.name},
                description=f"Takes at most {cfg.batch_size} messages per run from {cfg.queue}.",
            )
            for cfg in consumer_configs().values()
            if cfg.mode == "pull"
        ),
    ]
