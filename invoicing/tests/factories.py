"""Build agreement events as the agreements context publishes them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from events.consuming import Event


def agreement_event(type: str, agreement_id: str, version: int, **data: Any) -> Event:
    base: dict[str, Any] = {"agreement_id": agreement_id}
    if type == "agreement.created":
        base |= {
            "customer": {"external_ref": f"C-{agreement_id}", "name": "Ada", "email": "ada@example.com"},
            "description": "Plan",
            "amount_minor": 1000,
            "currency": "EUR",
            "interval": "month",
            "interval_count": 1,
            "start_date": "2026-01-31",
            "end_date": None,
            "status": "active",
        }
    base |= data
    return Event(
        id=uuid.uuid5(uuid.NAMESPACE_URL, f"{agreement_id}/{version}"),
        type=type,
        schema_version=1,
        occurred_at=datetime.now(UTC),
        producer="agreements",
        aggregate_type="agreement",
        aggregate_id=agreement_id,
        aggregate_version=version,
        data=base,
    )
