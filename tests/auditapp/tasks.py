"""A test-only Celery task that keeps a worker busy for as long as a test needs."""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task

from events.operations.health import heartbeat_record


@shared_task(name="auditapp.busy", bind=True, ignore_result=True, acks_late=True)
def busy(self: Any, name: str, seconds: float) -> None:
    """Record ``<name>-started``, work ``seconds``, record ``<name>-done``. Idempotent."""
    heartbeat_record(name=f"{name}-started")
    time.sleep(seconds)
    heartbeat_record(name=f"{name}-done")
