"""invoicing's periodic tasks: the daily invoice run and its watchdog."""

from __future__ import annotations

from django.conf import settings

from core.schedules import Periodic


def periodic_tasks() -> list[Periodic]:
    return [
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
    ]
