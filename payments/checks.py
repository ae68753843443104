"""System checks of payments' settings."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register("billing")
def check_charge_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []
    soft = settings.CELERY_TASK_SOFT_TIME_LIMIT
    if settings.PAYMENT_CHARGES_TASK_SECONDS > soft / 2:
        errors.append(
            Error(
                f"PAYMENT_CHARGES_TASK_SECONDS ({settings.PAYMENT_CHARGES_TASK_SECONDS:g}s) is more than "
                f"half the tasks' soft time limit ({soft}s): a charge list's last charge, started just "
                "before that time and finishing after it, could be stopped by the limit, and the charges "
                "of the list not started yet would wait for their lease to run out.",
                hint=f"Set PAYMENT_CHARGES_TASK_SECONDS to {soft / 2:g} or less (left unset, it is the "
                "shorter of 10 s and a third of the soft limit), or raise CELERY_TASK_TIME_LIMIT (the soft "
                "limit follows it).",
                id="billing.E101",
            )
        )
    if settings.PAYMENT_CHARGES_PER_TASK < 1:
        errors.append(
            Error(
                f"PAYMENT_CHARGES_PER_TASK is {settings.PAYMENT_CHARGES_PER_TASK}: it must be at least 1.",
                hint="Unset it for the default, 10 charges per task message.",
                id="billing.E102",
            )
        )
    if settings.PAYMENT_CHARGE_CONCURRENCY < 1:
        errors.append(
            Error(
                f"PAYMENT_CHARGE_CONCURRENCY is {settings.PAYMENT_CHARGE_CONCURRENCY}: it must be at "
                "least 1.",
                hint="Unset it for the default, 10 charges of a list at the gateway at once.",
                id="billing.E103",
            )
        )
    return errors
