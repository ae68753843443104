"""The Celery application: broker is SQS (kombu's transport), config from Django settings."""

import os

from celery import Celery

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
