"""Test-only Celery tasks: one keeps a worker busy as long as a test needs, one tells which
database session a task ran on."""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task
from django.db import connection

from core.task_options import IDEMPOTENT_DB_TASK
from events.operations.health import heartbeat_record


@shared_task(name="auditapp.busy", bind=True, ignore_result=True, acks_late=True)
def busy(self: Any, name: str, seconds: float) -> None:
    """Record ``<name>-started``, work ``seconds``, record ``<name>-done``. Idempotent."""
    heartbeat_record(name=f"{name}-started")
    time.sleep(seconds)
    heartbeat_record(name=f"{name}-done")


@shared_task(name="auditapp.session", **IDEMPOTENT_DB_TASK)
def session(self: Any, name: str, lock_key: str = "", fail: bool = False, leave: str = "") -> None:
    """Record ``name`` with the PostgreSQL backend this task's connection is on and the retry it
    is; optionally take a session advisory lock ``lock_key`` it never releases, fail after
    recording, or run ``leave`` (SQL a buggy task might leave behind). Retried on database errors
    as the charge task is (IDEMPOTENT_DB_TASK)."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        if lock_key:
            cur.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [lock_key])
    heartbeat_record(name=name, detail={"backend_pid": pid, "retries": self.request.retries})
    if leave:
        with connection.cursor() as cur:
            cur.execute(leave)
    if fail:
        raise RuntimeError(f"{name} fails as asked")
