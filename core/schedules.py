"""The periodic tasks the project needs, synced into django-celery-beat's tables.

Each app declares its own in ``<app>/schedules.py`` (the daily invoice run lives in
invoicing's, the relay sweep in events'). ``periodic_tasks_sync()`` runs after every
``migrate`` (post_migrate) and from ``manage.py periodic_tasks_sync``. It creates missing
entries and never overwrites an operator's edits (schedule, enabled flag) made in admin,
unless ``reset=True``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from dataclasses import dataclass, field
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.db.models.signals import post_migrate
from django.dispatch import receiver
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask


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
    """Every periodic task of the project: each installed app declares its own in its
    ``schedules.py`` (a ``periodic_tasks()`` function, built from settings), plus
    ``EXTRA_PERIODIC_TASKS`` from settings."""
    found: list[Periodic] = []
    for config in apps.get_app_configs():
        name = f"{config.name}.schedules"
        if config.name != "core" and importlib.util.find_spec(name) is not None:
            found += importlib.import_module(name).periodic_tasks()
    return [*found, *getattr(settings, "EXTRA_PERIODIC_TASKS", [])]


def periodic_tasks_sync(*, reset: bool = False) -> list[tuple[str, str]]:
    """Create (or with ``reset`` overwrite) the project's periodic tasks. Returns (action, name)."""
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
    if sender.name == "django_celery_beat":  # its tables exist: the schedule can be written
        periodic_tasks_sync()
