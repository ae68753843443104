"""System checks of payments' settings."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register("billing")
def check_charge_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []
    if settings.PAYMENT_CHARGES_TASK_SECONDS > settings.CELERY_TASK_SOFT_TIME_LIMIT / 2:
        errors.append(
            Error(
                f"PAYMENT_CHARGES_TASK_SECONDS ({settings.PAYMENT_CHARGES_TASK_SECONDS:g}s) must be at most "
                f"half the tasks' soft time limit ({settings.CELERY_TASK_SOFT_TIME_LIMIT}s): a task "
                "finishes the charge it started past that time, and one stopped mid-charge leaves the "
                "rest of its list to wait for their lease to run out.",
                id="billing.E101",
            )
        )
    if settings.PAYMENT_CHARGES_PER_TASK < 1:
        errors.append(Error("PAYMENT_CHARGES_PER_TASK must be at least 1.", id="billing.E102"))
    if settings.PAYMENT_CHARGE_CONCURRENCY < 1:
        errors.append(Error("PAYMENT_CHARGE_CONCURRENCY must be at least 1.", id="billing.E103"))
    return errors
