"""Celery entry points of the event backbone. Thin: fetch by id, call a service."""

from __future__ import annotations

import socket
from typing import Any

from celery import shared_task

from .services import heartbeat_record


@shared_task(name="events.heartbeat", bind=True, ignore_result=True, acks_late=True)
def heartbeat(self: Any, name: str = "beat") -> None:
    """Record that beat and a worker on the ``events`` queue are alive. Idempotent."""
    heartbeat_record(
        name=name,
        detail={"worker": self.request.hostname or socket.gethostname(), "task_id": self.request.id},
    )
