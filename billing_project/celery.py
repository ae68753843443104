"""The Celery application: broker is SQS (kombu's transport), config from Django settings."""

import os
from typing import Any

from celery import Celery, states
from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections, connections

from billing_project import kombu_fixes

kombu_fixes.apply()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_project.settings.dev")

app = Celery("billing_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _register_worker_extensions() -> None:
    from click import Option

    from events.consuming.bootsteps import EventConsumersStep

    app.user_options["worker"].add(
        Option(
            ["--event-consumers"],
            default=None,
            help="Push-mode event consumers this worker runs: all, none, or e.g. invoicing,payments "
            "(default: the EVENT_CONSUMERS_IN_WORKER setting).",
        )
    )
    app.steps["worker"].add(EventConsumersStep)


_register_worker_extensions()


@task_prerun.connect(weak=False)
def _before_task(task: Any = None, **_: Any) -> None:
    """Close this thread's database connections that are past CONN_MAX_AGE or broken: the task's
    first query opens a fresh one (with CONN_HEALTH_CHECKS, one the server dropped meanwhile is
    found by a ping, not by the task's first statement failing). What Django does around a web
    request; Celery's fixup would close them all (CELERY_DB_REUSE_MAX, in the settings)."""
    if not _eager(task):
        close_old_connections()


@task_postrun.connect(weak=False)
def _after_task(task: Any = None, state: str | None = None, **_: Any) -> None:
    """After a task that succeeded, the same as before one. After one that failed or is retried,
    close its connections outright: whatever its error left in the session (a lock it could not
    release, a transaction it could not end) goes with them, as it did when every task closed."""
    if _eager(task):
        return
    if state == states.SUCCESS:
        close_old_connections()
    else:
        connections.close_all()


def _eager(task: Any) -> bool:
    return bool(getattr(getattr(task, "request", None), "is_eager", False))
