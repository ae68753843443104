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
from ..models import AlertState, OutboxEvent
from ..publishing.outbox import record_event
from .health import CheckResult, evaluate

logger = logging.getLogger(__name__)


def monitor_run() -> list[str]:
    """Evaluate the checks and publish alert / resolved events on state changes. Returns what was sent."""
    sent = [s for s in (alert_transition(result) for result in evaluate().checks) if s]
    for s in sent:
        logger.warning("monitoring: %s", s)
    return sent


def alert_transition(
    result: CheckResult, *, name: str | None = None, resolved_details: dict[str, Any] | None = None
) -> str | None:
    """Move the alert state ``name`` (default: the check's name) to ``result``: on a new breach
    record one ``alert.<check>``, when it clears one ``alert.resolved`` (with ``resolved_details``,
    default the check's name), nothing while it stays as it was. In its own transaction, the state
    row locked, so two runs at once send one alert. Returns what was sent, if anything."""
    name = name or result.check
    with transaction.atomic():
        state, _ = AlertState.objects.select_for_update().get_or_create(name=name)
        now = timezone.now()
        state.checked_at = now
        sent = None
        if result.breached and not state.breached:
            state.breached, state.since, state.summary = True, now, result.summary[:1000]
            state.version += 1
            _alert(state, f"alert.{result.check}", result.severity, result.summary, result.details)
            sent = f"alert.{result.check}" + ("" if name == result.check else f":{name.split(':')[-1]}")
        elif not result.breached and state.breached:
            state.breached = False
            state.version += 1
            _alert(
                state,
                contracts.ALERT_RESOLVED,
                "info",
                f"{name} is back to normal (breached since {state.since:%Y-%m-%d %H:%M} UTC)",
                resolved_details or {"check": result.check},
            )
            state.summary = ""
            sent = f"alert.resolved:{name}"
        state.save()
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


def alert_recorded(*, check: str, about: str, version: int = 1) -> bool:
    """Whether ``record_alert`` recorded this alert already (a second would break the outbox's
    one event per aggregate version)."""
    return OutboxEvent.objects.filter(
        type=f"alert.{check}", aggregate_id=f"{check}:{about}", aggregate_version=version
    ).exists()


def _alert(state: AlertState, event_type: str, severity: str, summary: str, details: dict[str, Any]) -> None:
    record_event(
        sender=AlertState,
        type=event_type,
        aggregate_id=f"check:{state.name}",
        aggregate_version=state.version,
        data={"check": state.name, "severity": severity, "summary": summary[:1000], "details": details},
    )
