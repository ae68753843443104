"""A worker keeps its database connection from task to task (CONN_MAX_AGE), as Django keeps one
from request to request, instead of Celery's default of a new PostgreSQL backend per task. A
connection the server dropped meanwhile or past its age is not used again, and nothing a task
leaves in its session (a lock, a transaction) reaches the next task."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, connections

from events.models import Heartbeat
from tests.auditapp.tasks import session
from tests.helpers import terminate_backends, wait_until

pytestmark = pytest.mark.slow


def run(**kwargs: Any) -> dict[str, Any]:
    """Send ``auditapp.session`` through SQS, wait until the worker ran it: its heartbeat's detail."""
    name = f"conn-{uuid.uuid4().hex[:8]}"
    session.apply_async(kwargs={"name": name, **kwargs})
    # 45 s: past the test settings' 30 s visibility timeout, should a message go to a poll that
    # never hands it on (a stopped worker's: conftest waits those out; a starting worker's)
    return wait_until(lambda: Heartbeat.objects.filter(name=name).first(), timeout=45).detail


def alive(pids: set[int]) -> set[int]:
    with connection.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)])
        return {r[0] for r in cur.fetchall()}


def lock_is_free(key: str) -> bool:
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [key])
        free = cur.fetchone()[0]
        if free:
            cur.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [key])
    return free


@pytest.fixture
def kept(celery_worker: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The worker's connections kept for ``seconds`` (CONN_MAX_AGE) from the next task on; the
    backends the test saw are ended afterwards (the test settings keep none)."""
    seen: set[int] = set()

    def keep(seconds: int) -> set[int]:
        monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", seconds)
        for _ in range(3):  # the worker's threads drop connections opened under the old age
            seen.add(run()["backend_pid"])
        return seen

    yield keep
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)
    terminate_backends(seen)


def test_tasks_share_a_connection_until_the_server_drops_it(kept):
    seen = kept(60)  # production's default
    # when six tasks run one after another
    pids = {run()["backend_pid"] for _ in range(6)}
    seen |= pids
    # then they ran on at most one backend per worker thread (two), still connected between tasks
    assert len(pids) <= 2 and alive(pids) == pids

    # when the server drops those connections between two tasks
    terminate_backends(pids)
    # then the next task runs at once on a new one: its first statement did not fail on the dead
    # one (a database error would have retried it)
    after = run()
    seen.add(after["backend_pid"])
    assert after["retries"] == 0 and after["backend_pid"] not in pids


def test_a_connection_past_its_age_is_replaced_before_the_next_task(kept):
    seen = kept(2)
    first = run()["backend_pid"]
    time.sleep(2.5)  # idle past CONN_MAX_AGE between two tasks
    after = run()
    seen.add(after["backend_pid"])
    assert after["backend_pid"] != first and after["retries"] == 0


@pytest.mark.parametrize(
    "leave, what",
    [
        ("SELECT pg_advisory_lock(hashtextextended('test-leaked', 0))", "a lock"),
        ("BEGIN", "a transaction"),
    ],
)
def test_a_task_that_succeeds_but_leaves_its_session_changed_hands_on_a_new_one(kept, leave, what, caplog):
    seen = kept(60)
    # when a task succeeds but leaves something in its session
    leaker = run(leave=leave)
    seen.add(leaker["backend_pid"])
    # then that session is closed (and the error logged), so nothing of it reaches a later task
    wait_until(lambda: not alive({leaker["backend_pid"]}), timeout=10)
    assert lock_is_free("test-leaked")
    for _ in range(3):
        after = run(leave="SELECT 1")
        seen.add(after["backend_pid"])
        assert after["backend_pid"] != leaker["backend_pid"]
    assert any("left" in r.getMessage() and "closed" in r.getMessage() for r in caplog.records)


def test_a_failed_task_leaves_no_session_behind(kept):
    seen = kept(60)
    key = f"test-lock-{uuid.uuid4().hex[:8]}"
    # when a task takes a session lock it never releases and then fails
    failed = run(lock_key=key, fail=True)
    seen.add(failed["backend_pid"])
    # then its connection is closed, and with it the lock: another session takes it at once
    wait_until(lambda: not alive({failed["backend_pid"]}), timeout=10)
    assert lock_is_free(key)


def test_with_no_max_age_each_task_gets_a_connection_of_its_own(celery_worker):
    # CONN_MAX_AGE 0 (the test settings'): closed after each task, as Django closes after a request
    run()
    pids = [run()["backend_pid"] for _ in range(4)]
    assert len(set(pids)) == 4
    wait_until(lambda: not alive(set(pids)), timeout=10)


def test_kept_connections_notice_a_vanished_server_within_a_minute(db):
    # what libpq was given for every connection: idle, 30 s then 3 probes 10 s apart; mid-call,
    # 30 s of data the server does not acknowledge (a dead peer, not a slow query)
    connection.ensure_connection()
    params = connection.connection.get_dsn_parameters()
    expected = {
        "keepalives": "1",
        "keepalives_idle": "30",
        "keepalives_interval": "10",
        "keepalives_count": "3",
        "tcp_user_timeout": "30000",
    }
    assert {k: params.get(k) for k in expected} == expected
