"""The delivery audit's section of the Messaging page (registered like any app's panel)."""

from __future__ import annotations

from typing import Any

from ..operations.console import register_panel
from .selectors import audit_summaries


@register_panel(title="Delivery audit", template="admin/events/_audit_panel.html")
def audit_panel() -> dict[str, Any]:
    """Each consumer's last pass: three small reads (one row per consumer)."""
    return {"consumers": audit_summaries()}
