"""Write services of the event backbone."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from .models import Heartbeat


def heartbeat_record(*, name: str, detail: dict[str, Any] | None = None) -> Heartbeat:
    """Record that ``name`` is alive now. Idempotent: one row per name, last write wins."""
    beat, _ = Heartbeat.objects.update_or_create(
        name=name, defaults={"beat_at": timezone.now(), "detail": detail or {}}
    )
    return beat
