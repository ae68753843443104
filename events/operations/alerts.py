"""Alerts from the health model (beat, every MONITOR_INTERVAL_SECONDS): a breach publishes one
alert.* event to the alerts topic (once per breach, not on every run while it lasts) and
alert.resolved when it clears. Alerts reach operators by e-mail (SNS subscriptions on AWS, the
alerts_mail consumer locally).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import contracts
from ..models import AlertState
from ..publishing.outbox import record_event
from .health import evaluate

logger = logging.getLogger(__name__)


def monitor_run() -> list[str]:
    """Evaluate the checks and publish alert / resolved events on state changes. Returns what was sent."""
    sent = []
    for result in evaluate().checks:
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


def record_alert(
    *,
    sender: Any,
    check: str,
    about: str,
    severity: str,
    summary: str,
    details: dict[str, Any],
    version: int = 1,
) -> None:
    """Record an ``alert.<check>`` event about one thing (``about``: a payment id, a run id) in the
    caller's transaction: it goes to the alerts topic with the change that caused it."""
    record_event(
        sender=sender,
        type=f"alert.{check}",
        aggregate_id=f"{check}:{about}",
        aggregate_version=version,
        data={"check": check, "severity": severity, "summary": summary[:1000], "details": details},
    )


def _alert(state: AlertState, event_type: str, severity: str, summary: str, details: dict[str, Any]) -> None:
    record_event(
        sender=AlertState,
        type=event_type,
        aggregate_id=f"check:{state.name}",
        aggregate_version=state.version,
        data={"check": state.name, "severity": severity, "summary": summary[:1000], "details": details},
    )
