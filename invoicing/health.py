"""invoicing's automated checks, run with the backbone's monitoring (events.monitor)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from events.operations.health import CheckResult, Repair, register_check

from .models import DailyRun


@register_check
def daily_run_stuck() -> CheckResult:
    """A daily run still running after MONITOR_DAILY_RUN_MAX_RUNNING_SECONDS: its chunks are neither
    done nor failed (the watchdog resends dead ones, so this means something keeps failing)."""
    limit = settings.MONITOR_DAILY_RUN_MAX_RUNNING_SECONDS
    stuck = list(
        DailyRun.objects.filter(
            status=DailyRun.Status.RUNNING, started_at__lt=timezone.now() - timedelta(seconds=limit)
        )
        .order_by("started_at")
        .values("pk", "run_date", "chunks_done", "chunks_failed", "chunks_total")[:10]
    )
    summary = ""
    if stuck:
        first = stuck[0]
        summary = (
            f"daily run for {first['run_date']} still running after {limit}s "
            f"({first['chunks_done']} of {first['chunks_total']} chunks done); see Admin -> Daily runs"
        )
    return CheckResult(
        "daily_run_stuck",
        bool(stuck),
        summary,
        "critical",
        {"runs": [{"id": r["pk"], "run_date": r["run_date"].isoformat()} for r in stuck]},
        [
            Repair(
                "see which chunks fail and why; once fixed, run that day again (idempotent)",
                (f"invoices_issue --date {r['run_date'].isoformat()}",),
                reverse("admin:invoicing_dailyrun_change", args=[r["pk"]]),
            )
            for r in stuck
        ],
    )
