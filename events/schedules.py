"""The periodic tasks the project needs, synced into django-celery-beat's tables.

``periodic_tasks_sync()`` runs after every ``migrate`` (post_migrate) and from
``manage.py periodic_tasks_sync``. It creates missing entries and never
overwrites an operator's edits (schedule, enabled flag) made in admin, unless
``reset=True``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_migrate
from django.dispatch import receiver


@dataclass(frozen=True)
class Periodic:
    name: str
    task: str
    every_seconds: int | None = None
    crontab: dict[str, str] | None = None  # minute, hour, day_of_week, ...
    timezone: str | None = None  # of the crontab; default settings.TIME_ZONE
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    description: str = ""


def periodic_tasks() -> list[Periodic]:
    """Every periodic task, built from settings (intervals and times are settings)."""
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
            name="Daily invoice run",
            task="invoicing.issue_due_invoices",
            crontab={"minute": str(settings.INVOICE_RUN_MINUTE), "hour": str(settings.INVOICE_RUN_HOUR)},
            timezone=settings.BILLING_TIME_ZONE,
            description="Issues every invoice that fell due (catch-up included). Edit the time here.",
        ),
        Periodic(
            name="Daily run watchdog",
            task="invoicing.daily_run_watchdog",
            every_seconds=settings.INVOICING_WATCHDOG_SECONDS,
            description="Resends daily-run chunks whose worker died; finishes runs whose chunks all ended.",
        ),
        Periodic(
            name="Monitoring checks",
            task="events.monitor",
            every_seconds=settings.MONITOR_INTERVAL_SECONDS,
            description="DLQ depth, oldest message age, outbox lag, daily run missed, payment failure rate.",
        ),
        Periodic(
            name="Payments: retries due",
            task="payments.retry_due",
            every_seconds=settings.PAYMENT_RETRY_SWEEP_SECONDS,
            description="Charges payments whose dunning or backoff time has come; rescues stuck ones.",
        ),
        *_pull_consumers(),
        *getattr(settings, "EXTRA_PERIODIC_TASKS", []),
    ]


def _pull_consumers() -> list[Periodic]:
    from .pollers import consumer_configs

    return [
        Periodic(
            name=f"Pull consumer: {cfg.name}",
            task="events.pull_consumer",
            every_seconds=cfg.interval_seconds,
            kwargs={"consumer": cfg.name},
            description=f"Takes at most {cfg.batch_size} messages per run from {cfg.queue}.",
        )
        for cfg in consumer_configs().values()
        if cfg.mode == "pull"
    ]


def periodic_tasks_sync(*, reset: bool = False) -> list[tuple[str, str]]:
    """Create (or with ``reset`` overwrite) the project's periodic tasks. Returns (action, name)."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    done: list[tuple[str, str]] = []
    for p in periodic_tasks():
        schedule: dict[str, Any] = {}
        if p.every_seconds is not None:
            interval, _ = IntervalSchedule.objects.get_or_create(
                every=p.every_seconds, period=IntervalSchedule.SECONDS
            )
            schedule = {"interval": interval, "crontab": None}
        elif p.crontab is not None:
            cron, _ = CrontabSchedule.objects.get_or_create(
                timezone=p.timezone or settings.TIME_ZONE, **p.crontab
            )
            schedule = {"crontab": cron, "interval": None}
        values = {
            "task": p.task,
            "kwargs": json.dumps(p.kwargs),
            "queue": p.queue,
            "description": p.description,
            **schedule,
        }
        existing = PeriodicTask.objects.filter(name=p.name).first()
        if existing is None:
            PeriodicTask.objects.create(name=p.name, **values)
            done.append(("created", p.name))
        elif reset:
            for key, value in values.items():
                setattr(existing, key, value)
            existing.enabled = True
            existing.save()
            done.append(("reset", p.name))
        else:
            done.append(("kept", p.name))
    return done


@receiver(post_migrate)
def _sync_after_migrate(sender: AppConfig, **kwargs: Any) -> None:
    if sender.name == "events":
        periodic_tasks_sync()
