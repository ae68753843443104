"""System checks: catch settings that would silently break delivery guarantees."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register("billing")
def check_messaging_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []
    longest = settings.CELERY_TASK_TIME_LIMIT + settings.CELERY_MAX_COUNTDOWN
    if settings.CELERY_VISIBILITY_TIMEOUT <= longest:
        errors.append(
            Error(
                f"CELERY_VISIBILITY_TIMEOUT ({settings.CELERY_VISIBILITY_TIMEOUT}s) must exceed the "
                f"longest task plus countdown ({longest}s), or SQS redelivers running tasks.",
                id="billing.E001",
            )
        )
    if settings.MESSAGING_DLQ_RETENTION_SECONDS <= settings.MESSAGING_RETENTION_SECONDS:
        errors.append(
            Error(
                "MESSAGING_DLQ_RETENTION_SECONDS must be longer than MESSAGING_RETENTION_SECONDS: "
                "SQS keeps a message's original enqueue time when it moves to the DLQ.",
                id="billing.E002",
            )
        )
    if settings.MESSAGING_MAX_RECEIVE_COUNT < 1:
        errors.append(Error("MESSAGING_MAX_RECEIVE_COUNT must be at least 1.", id="billing.E003"))
    return errors
