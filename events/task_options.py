"""Task options shared by every app's tasks (STYLE: bound, no results, bounded retries with jitter)."""

from __future__ import annotations

from typing import Any

from django.db import DatabaseError

# Idempotent work: acknowledged after it ran (a crash redelivers it), database hiccups
# (a terminated connection, a serialization failure) retried a bounded number of times.
IDEMPOTENT_DB_TASK: dict[str, Any] = {
    "bind": True,
    "ignore_result": True,
    "acks_late": True,
    "autoretry_for": (DatabaseError,),
    "max_retries": 5,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
}
