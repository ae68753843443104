"""payments' panel on the backbone's Messaging page: charges waiting at the gateway's pace with a
forecast, and retries scheduled per day (registered here, so the backbone never imports payments)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from events.operations.console import register_panel

from .selectors import payments_charge_forecast, payments_retries_by_day, payments_unsent


@register_panel(title="Payments", template="admin/payments/messaging_panel.html")
def payments_panel() -> dict[str, Any]:
    """Read-only and cheap: a bounded count and an index read (payments/selectors.py)."""
    return {
        "forecast": payments_charge_forecast(),
        "unsent": payments_unsent(),
        "retries": payments_retries_by_day(),
        "payments_url": reverse("admin:payments_payment_changelist"),
    }
