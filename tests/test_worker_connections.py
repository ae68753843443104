"""A worker keeps its database connection from task to task (CONN_MAX_AGE), as Django keeps one
from request to request, instead of Celery's default of a new PostgreSQL backend per task; a
connection the server dropped meanwhile, or one a failed task leaves, is not used again."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection, connections

from events.models import Heartbeat
from tests.auditapp.tasks import session
from tests.helpers import wait_until

pytestmark = pytest.mark.slow


def run(**kwargs: Any) -> dict[str, Any]:
    """Send ``auditapp.session`` through SQS, wait until the worker ran it: its heartbeat's detail."""
    name = f"conn-{uuid.uuid4().hex[:8]}"
    session.apply_async(kwargs={"name": name, **kwargs})
    return wait_until(lambda: Heartbeat.objects.filter(name=name).first(), timeout=30).detail


def alive(pids: set[int]) -> set[int]:
    with connection.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)])
        return {r[0] for r in cur.fetchall()}


def terminate(pids: set[int]) -> None:
    with connection.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [list(pids)])
    wait_until(lambda: not alive(pids), timeout=10)


@pytest.fixture
def max_age(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set CONN_MAX_AGE for the connections the worker's threads open from now on."""

    def set_(seconds: int | None) -> None:
        monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", seconds)

    return set_


def test_tasks_share_a_connection_until_the_server_drops_it(celery_worker, max_age):
    # given connections kept for a minute (production's default)
    max_age(60)
    run()  # each worker thread's connection from the probe, opened with no max age, goes
    run()
    # when six tasks run one after another on the worker's two threads
    pids = {run()["backend_pid"] for _ in range(6)}
    seen = set(pids)
    try:
        # then they ran on at most two backends, still connected between tasks
        assert len(pids) <= 2 and alive(pids) == pids

        # when the server drops those connections between two tasks
        terminate(pids)
        # then the next task runs at once on a new one: not failed on the dead one and retried
        after = run()
        seen.add(after["backend_pid"])
        assert after["retries"] == 0 and after["backend_pid"] not in pids
    finally:
        max_age(0)
        terminate(seen)


def test_a_failed_task_leaves_no_session_behind(celery_worker, max_age):
    max_age(60)
    key = f"test-lock-{uuid.uuid4().hex[:8]}"
    # when a task takes a session lock it never releases and then fails
    failed = run(lock_key=key, fail=True)
    # then its connection is closed, and with it the lock: nothing of it is left for later tasks
    wait_until(lambda: not alive({failed["backend_pid"]}), timeout=10)
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [key])
        assert cur.fetchone()[0] is True  # another session takes it at once
        cur.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [key])
    max_age(0)


def test_with_no_max_age_each_task_gets_a_connection_of_its_own(celery_worker, max_age):
    # CONN_MAX_AGE 0 (the test settings'): closed after each task, as Django closes after a request
    max_age(0)
    run()
    run()
    pids = [run()["backend_pid"] for _ in range(4)]
    assert len(set(pids)) == 4
    wait_until(lambda: not alive(set(pids)), timeout=10)
