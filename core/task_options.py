"""Task options shared by every app's tasks (STYLE: bound, no results, bounded retries with jitter)."""

from __future__ import annotations

import random
from typing import Any

from django.db import DatabaseError, InterfaceError

# Idempotent work: acknowledged after it ran (a crash redelivers it), database hiccups
# (a terminated connection, a serialization failure) retried a bounded number of times.
IDEMPOTENT_DB_TASK: dict[str, Any] = {
    "bind": True,
    "ignore_result": True,
    "acks_late": True,
    "autoretry_for": (DatabaseError, InterfaceError),
    "max_retries": 5,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
}


def backoff_seconds(retries: int, *, base: float = 1.0, maximum: float = 60.0) -> int:
    """Exponential backoff with equal jitter: half fixed (never at once), half random (no lockstep)."""
    ceiling = min(maximum, base * 2**retries)
    return max(1, round(ceiling / 2 + random.uniform(0, ceiling / 2)))
