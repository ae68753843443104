"""Build agreement events as the agreements context publishes them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from events.consuming import Event


def agreement_event(
    type: str, agreement_id: str, version: int, *, schema_version: int | None = None, **data: Any
) -> Event:
    """The event as its consumer gets it. ``agreement.created`` is version 2 (the agreement named
    ``SUB-<id>``) unless ``schema_version=1`` (as recorded before v2: no ref, another event id)."""
    base: dict[str, Any] = {"agreement_id": agreement_id}
    schema_version = schema_version or (2 if type == "agreement.created" else 1)
    if type == "agreement.created":
        if schema_version >= 2:
            base["external_ref"] = f"SUB-{agreement_id}"
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
    suffix = "/v1" if type == "agreement.created" and schema_version == 1 else ""
    return Event(
        id=uuid.uuid5(uuid.NAMESPACE_URL, f"{agreement_id}/{version}{suffix}"),
        type=type,
        schema_version=schema_version,
        occurred_at=datetime.now(UTC),
        producer="agreements",
        aggregate_type="agreement",
        aggregate_id=agreement_id,
        aggregate_version=version,
        data=base,
    )
