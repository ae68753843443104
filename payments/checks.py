"""System checks of payments' settings."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register("billing")
def check_charge_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []
    soft = settings.CELERY_TASK_SOFT_TIME_LIMIT
    seconds = settings.PAYMENT_CHARGES_TASK_SECONDS
    if seconds > soft / 2:
        errors.append(
            Error(
                f"PAYMENT_CHARGES_TASK_SECONDS ({seconds:g}s) is more than half the tasks' soft time "
                f"limit ({soft}s). A charge list starts charges for that long, and the last one (its "
                "token wait, then up to the gateway's timeout) must end before the limit stops the task, "
                "or the list's charges not started yet wait for their lease to run out: half the limit is "
                "the margin kept for it.",
                hint=f"Set PAYMENT_CHARGES_TASK_SECONDS to {soft / 2:g} or less (left unset, it is the "
                "shorter of 10 s and a third of the soft limit), or set CELERY_TASK_TIME_LIMIT to "
                f"{2 * seconds + 30:g} or more (the soft limit is 30 s under it).",
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
