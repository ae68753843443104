"""Automated checks (beat, every MONITOR_INTERVAL_SECONDS): a breach publishes one alert.* event
to the alerts topic (once per breach, not on every run while it lasts) and alert.resolved when it
clears. Alerts reach operators by e-mail (SNS subscriptions on AWS, the alerts_mail consumer locally).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import contracts
from .models import AlertState, Heartbeat, OutboxEvent
from .monitoring import outbox_stats, queue_stats
from .outbox import record_event

logger = logging.getLogger(__name__)


@dataclass
class CheckResult:
    check: str  # the alert type is alert.<check>
    breached: bool
    summary: str = ""
    severity: str = "warning"
    details: dict[str, Any] = field(default_factory=dict)


# Checks that belong to a domain app (e.g. invoicing's "daily run stuck"), registered by the app
# itself so the backbone never imports it.
EXTRA_CHECKS: list[Callable[[], CheckResult]] = []


def register_check(fn: Callable[[], CheckResult]) -> Callable[[], CheckResult]:
    """Add ``fn`` to the automated checks (``monitor_run`` alerts on its breaches like the others)."""
    if fn not in EXTRA_CHECKS:
        EXTRA_CHECKS.append(fn)
    return fn


def evaluate() -> list[CheckResult]:
    """Every automated check, now."""
    queues = queue_stats()
    outbox = outbox_stats()
    results = []
    dlqs = {q.name: q.depth for q in queues if q.is_dlq and q.depth > settings.MONITOR_DLQ_MAX_DEPTH}
    results.append(
        CheckResult(
            "dlq_not_empty",
            bool(dlqs),
            f"{sum(dlqs.values())} message(s) in {sorted(dlqs)}",
            "critical",
            {"dlqs": dlqs},
        )
    )
    # A deleted or never-provisioned queue: workers and pollers back off on it and nothing flows.
    missing = sorted(q.name for q in queues if q.missing)
    results.append(
        CheckResult(
            "queues_missing",
            bool(missing),
            f"{len(missing)} queue(s) do not exist: {', '.join(missing)}; run messaging_provision",
            "critical",
            {"queues": missing},
        )
    )
    limit = settings.MONITOR_QUEUE_MAX_AGE_SECONDS
    old = {q.name: round(q.oldest_age or 0) for q in queues if not q.is_dlq and (q.oldest_age or 0) > limit}
    results.append(
        CheckResult(
            "queue_message_too_old",
            bool(old),
            f"oldest message over {limit}s in {sorted(old)}",
            "warning",
            {"queues": old},
        )
    )
    lag = outbox.oldest_unpublished_age or 0
    results.append(
        CheckResult(
            "outbox_lagging",
            lag > settings.MONITOR_OUTBOX_MAX_AGE_SECONDS,
            f"{outbox.unpublished} unpublished event(s), oldest {lag:.0f}s",
            "critical",
            {"unpublished": outbox.unpublished, "oldest_age_seconds": round(lag)},
        )
    )
    beat = Heartbeat.objects.filter(name="daily_run").first()
    max_age = timedelta(hours=settings.MONITOR_DAILY_RUN_MAX_AGE_HOURS)
    missed = beat is not None and timezone.now() - beat.beat_at > max_age
    results.append(
        CheckResult(
            "daily_run_missed",
            missed,
            f"no daily run finished since {beat.beat_at:%Y-%m-%d %H:%M} UTC" if beat else "",
            "critical",
            {"last_run": beat.beat_at.isoformat() if beat else None},
        )
    )
    since = timezone.now() - timedelta(hours=1)
    recent = OutboxEvent.objects.filter(occurred_at__gte=since)
    ok = recent.filter(type=contracts.PAYMENT_SUCCEEDED).count()
    failed = recent.filter(type=contracts.PAYMENT_FAILED, data__final=True).count()
    total = ok + failed
    rate = failed / total if total else 0.0
    results.append(
        CheckResult(
            "payment_failure_rate",
            total >= settings.MONITOR_PAYMENT_MIN_OUTCOMES and rate > settings.MONITOR_PAYMENT_FAILURE_RATE,
            f"{rate:.0%} of {total} payments failed for good in the last hour",
            "warning",
            {"failed": failed, "succeeded": ok},
        )
    )
    results.extend(check() for check in EXTRA_CHECKS)
    return results


def monitor_run() -> list[str]:
    """Evaluate the checks and publish alert / resolved events on state changes. Returns what was sent."""
    sent = []
    for result in evaluate():
        with transaction.atomic():
            state, _ = AlertState.objects.select_for_update().get_or_create(name=result.check)
            now = timezone.now()
            state.checked_at = now
            if result.breached and not state.breached:
                state.breached, state.since, state.summary = True, now, result.summary[:1000]
                state.version += 1
                _alert(state, f"alert.{result.check}", result.severity, result.summary, result.details)
                sent.append(f"alert.{result.check}")
            elif not result.breached and state.breached:
                state.breached = False
                state.version += 1
                _alert(
                    state,
                    contracts.ALERT_RESOLVED,
                    "info",
                    f"{result.check} is back to normal (breached since {state.since:%Y-%m-%d %H:%M} UTC)",
                    {"check": result.check},
                )
                state.summary = ""
                sent.append(f"alert.resolved:{result.check}")
            state.save()
    for s in sent:
        logger.warning("monitoring: %s", s)
    return sent


def _alert(state: AlertState, event_type: str, severity: str, summary: str, details: dict[str, Any]) -> None:
    record_event(
        sender=AlertState,
        type=event_type,
        aggregate_id=f"check:{state.name}",
        aggregate_version=state.version,
        data={"check": state.name, "severity": severity, "summary": summary[:1000], "details": details},
    )
