"""The relay kicker: kicks coalesce across processes; flush when the broker fails or stops answering."""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection, connections
from django.db.backends.signals import connection_created

from events.models import OutboxEvent
from events.publishing import kicker as kicker_module
from events.publishing import relay
from events.publishing.kicker import RelayKicker
from events.publishing.relay_pass import RelayResult
from events.tasks import relay_outbox
from tests.factories import drain, record_agreements_created
from tests.helpers import ROOT, database_url, wait_until

TASK_QUEUE = "billing-test-celery-events"  # where events.relay_outbox is routed


@pytest.fixture
def fresh_kicker(settings, monkeypatch) -> RelayKicker:
    settings.OUTBOX_KICK_RELAY = True
    monkeypatch.setattr(kicker_module.atexit, "register", lambda fn: fn)  # not this test's process exit
    return RelayKicker()


def relay_tasks_queued(sqs: Any) -> int:
    """The relay tasks waiting on the events task queue since the last look (taken off it)."""
    msgs = drain(sqs, TASK_QUEUE, wait=1)
    tasks = [json.loads(base64.b64decode(m["Body"]))["headers"]["task"] for m in msgs]
    return tasks.count("events.relay_outbox")


def kick_from_every_process(kickers: list[RelayKicker], seconds: float) -> None:
    """Commits in every process, one after another, for ``seconds``: each asks its kicker."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        for k in kickers:
            k.request()
        time.sleep(0.01)
    wait_until(lambda: all(not k._wanted.is_set() and not k._sending.locked() for k in kickers), timeout=10)


@pytest.fixture
def processes(settings, monkeypatch, sqs, empty_queues) -> Iterator[list[RelayKicker]]:
    """Four processes' kickers (each its own thread and database connection), a kick every 50 ms
    each at most, the real broker, nothing yet on the events task queue."""
    settings.OUTBOX_KICK_RELAY = True
    settings.OUTBOX_KICK_MIN_INTERVAL_SECONDS = 0.05
    monkeypatch.setattr(kicker_module.atexit, "register", lambda fn: fn)
    drain(sqs, TASK_QUEUE, wait=0)
    kickers = [RelayKicker() for _ in range(4)]
    yield kickers
    for k in kickers:  # each thread lets go of its connection (kept 10 s after a kick) first
        if k._thread is not None:
            assert k.wait_idle()


@pytest.mark.django_db(transaction=True)
def test_kicks_from_many_processes_queue_one_relay_task_until_it_has_run(processes, sqs):
    # when four busy processes commit events for a second and a half, no worker yet taking tasks
    kick_from_every_process(processes, 1.5)
    # then one relay task waits on the queue, not one per process per interval (~120)
    assert relay_tasks_queued(sqs) == 1
    # (each process tried again and again: how often depends on the machine's load, 16-30 in all)
    assert sum(k.sent for k in processes) == 1 and all(k.skipped >= 2 for k in processes)
    # when a worker runs that task and commits go on
    relay_outbox()
    kick_from_every_process(processes, 0.5)
    # then exactly one more goes: rows committed after its last look need a relay of their own
    assert relay_tasks_queued(sqs) == 1


@contextmanager
def relay_task_running(
    monkeypatch: Any, ended: threading.Event | None = None, passes: Any = None
) -> Iterator[None]:
    """A relay task running in a thread of its own until the block ends (then ``ended`` is set).
    Its passes are ``passes`` if given, else one pass held until the block ends."""
    started, ended = threading.Event(), ended or threading.Event()

    def held(**kwargs: Any) -> RelayResult:
        ended.wait(30)
        return RelayResult()

    def each_pass(**kwargs: Any) -> RelayResult:
        started.set()
        return (passes or held)(**kwargs)

    monkeypatch.setattr(relay, "relay_pending", each_pass)

    def run() -> None:
        try:
            relay_outbox()
        finally:
            connection.close()

    running = threading.Thread(target=run)
    running.start()
    assert started.wait(10)
    try:
        yield
    finally:
        ended.set()
        running.join(10)


@pytest.mark.django_db(transaction=True)
def test_during_a_long_relay_kicks_wait_for_it_and_go_again_when_it_ends(processes, sqs, monkeypatch):
    # given a relay running a long pass (the sweep's, through a backlog of 100,000)
    with relay_task_running(monkeypatch):
        # when commits go on: no kick goes (the running relay looks again before it stops)
        kick_from_every_process(processes, 0.3)
        assert relay_tasks_queued(sqs) == 0
        # nor once a relay task sent earlier starts, finds the relay running and returns
        assert relay_outbox()["running_elsewhere"] == 1
        kick_from_every_process(processes, 0.5)
        assert relay_tasks_queued(sqs) == 0
    # when the long pass ends (and looks once more): commits after it kick again at once
    kick_from_every_process(processes, 0.3)
    assert relay_tasks_queued(sqs) == 1


@pytest.mark.django_db(transaction=True)
def test_while_a_relay_keeps_finding_new_rows_kicks_send_nothing(processes, sqs, monkeypatch):
    # given a relay whose every look after a pass finds new rows (events commit faster than its
    # passes end: a daily run, 5,000 charges), passes of 50 ms, for a second and a half
    ended = threading.Event()

    def short_pass(**kwargs: Any) -> RelayResult:
        time.sleep(0.05)
        return RelayResult(published=1, batches=1)

    monkeypatch.setattr(relay, "due_rows_exist", lambda **kwargs: not ended.is_set())
    with relay_task_running(monkeypatch, ended, short_pass):
        # when every process commits and kicks meanwhile
        kick_from_every_process(processes, 1.5)
        # then no relay task is queued, not one per process per interval while it goes on
        assert relay_tasks_queued(sqs) == 0
    # and once it stops, commits kick again
    kick_from_every_process(processes, 0.2)
    assert relay_tasks_queued(sqs) == 1


@pytest.mark.django_db(transaction=True)
def test_commits_after_a_relay_that_failed_kick_again(processes, sqs, monkeypatch):
    # given a relay whose pass fails with an error no retry covers
    def broken_pass(**kwargs: Any) -> RelayResult:
        raise RuntimeError("a bug")

    monkeypatch.setattr(relay, "relay_pending", broken_pass)
    with pytest.raises(RuntimeError):
        relay_outbox()
    # when events commit after it
    kick_from_every_process(processes, 0.2)
    # then their kick goes, rather than wait for the sweep behind the failed relay's hold
    assert relay_tasks_queued(sqs) == 1


@pytest.mark.django_db(transaction=True)
def test_a_relay_task_that_never_starts_is_taken_for_lost_and_kicked_again(processes, sqs, settings):
    # given a relay task sent and lost (a worker that took it and died, a purged queue)
    settings.OUTBOX_KICK_PENDING_SECONDS = 3
    before = time.monotonic()
    kick_from_every_process(processes[:1], 0.1)
    sent = time.monotonic()  # the claim was made between these two
    # when commits go on while it is still fresh: nothing more is sent (counted after, so the
    # queue's long poll does not eat into the bound)
    kick_from_every_process(processes, 0.3)
    assert time.monotonic() - before < 3, "too slow to kick while the claim was fresh"
    assert relay_tasks_queued(sqs) == 1
    # when they go on past the pending bound, nothing having started it
    time.sleep(max(0.0, sent + 3.2 - time.monotonic()))
    kick_from_every_process(processes, 0.3)
    # then a new one goes, and only one
    assert relay_tasks_queued(sqs) == 1


@pytest.mark.django_db(transaction=True)
def test_a_kick_the_broker_refused_does_not_hold_back_other_processes(processes, sqs, monkeypatch):
    class Down:
        def send_task(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionError("broker hiccup")

    # given one process whose kick the broker refused (a flush: one try, no retrying thread)
    with monkeypatch.context() as broker_down:  # undoes this only, not the fixture's patches
        broker_down.setattr(kicker_module, "current_app", Down())
        processes[0]._wanted.set()
        processes[0]._flush_now()
    assert processes[0].sent == 0 and processes[0]._wanted.is_set()
    # when another process commits at once
    kick_from_every_process(processes[1:2], 0.1)
    # then its kick goes, rather than wait out the failed one's claim
    assert relay_tasks_queued(sqs) == 1


def backend_alive(pid: int) -> bool:
    with connection.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
        return cur.fetchone() is not None


@pytest.mark.django_db(transaction=True)
def test_a_kicker_keeps_one_connection_through_commits_and_lets_go_when_quiet(processes, sqs, monkeypatch):
    # given a process whose connections are kept (CONN_MAX_AGE, as outside tests), committing every
    # 0.2 s, more than its kick interval (50 ms) apart, and a kicker letting go when quiet for 1 s
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 60)
    monkeypatch.setattr(kicker_module, "KEEP_CONNECTION_SECONDS", 1.0)
    opened: list[int] = []  # the kicker thread's connections' server processes

    def count(sender: Any, connection: Any, **kw: Any) -> None:
        if threading.current_thread().name == "relay-kicker":
            opened.append(connection.connection.info.backend_pid)

    connection_created.connect(count)
    k = processes[0]
    try:
        # when it kicks after each of ten commits
        for _ in range(10):
            k.request()
            time.sleep(0.2)
        wait_until(lambda: not k._wanted.is_set() and not k._sending.locked(), timeout=10)
        # then its kicks (one sent, the others finding it waiting) took one connection, not one each
        assert len(opened) == 1 and backend_alive(opened[0])
        assert k.sent + k.skipped >= 5  # (commits the thread had not yet seen share a kick)
        # and once quiet for that second it holds none
        wait_until(lambda: not backend_alive(opened[0]), timeout=5)
    finally:
        connection_created.disconnect(count)
    assert len(opened) == 1 and relay_tasks_queued(sqs) == 1


def test_flush_returns_within_its_bound_when_the_broker_stops_answering(fresh_kicker, settings):
    # given a kick that went out, and a broker that then stops answering (a send that never returns)
    settings.OUTBOX_KICK_MIN_INTERVAL_SECONDS = 5
    settings.OUTBOX_KICK_FLUSH_SECONDS = 2
    k, calls, hung = fresh_kicker, [], threading.Event()

    def send() -> None:
        calls.append(time.monotonic())
        if len(calls) > 1:
            hung.wait(60)
        k.sent += 1

    k._send = send  # type: ignore[method-assign]
    k.request()
    wait_until(lambda: k.sent == 1, timeout=5)
    # when a last commit asks for a kick while the thread waits out its interval, and the
    # process flushes on its way out
    k.request()
    flushing = threading.Thread(target=k.flush, daemon=True)
    started = time.monotonic()
    flushing.start()
    flushing.join(8)
    try:
        # then flush gives up within its bound rather than hold the process's exit
        assert not flushing.is_alive(), f"flush still waiting after {time.monotonic() - started:.0f}s"
    finally:
        hung.set()


def test_a_process_forked_while_its_parent_sends_a_kick_kicks_after_its_own_commits(fresh_kicker):
    # given a worker's main process (where the push consumers commit) whose kicker is sending
    k, sending, release = fresh_kicker, threading.Event(), threading.Event()

    def slow_send() -> None:
        sending.set()
        release.wait(30)

    k._send = slow_send  # type: ignore[method-assign]
    k.request()
    assert sending.wait(5)
    # when the prefork pool forks a new child then, and the child commits events
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            sent = threading.Event()
            k._send = lambda: (os.write(w, b"k"), sent.set())  # type: ignore[method-assign,assignment]
            k.request()
            sent.wait(5)
        finally:
            os._exit(0)
    os.close(w)
    release.set()
    try:
        # then the child's kicker sends its kick (it does not wait for ever on its parent's send)
        assert select.select([r], [], [], 10)[0] and os.read(r, 1) == b"k"
    finally:
        os.waitpid(pid, 0)
        os.close(r)


def test_a_kick_whose_send_failed_is_sent_by_flush(fresh_kicker, monkeypatch):
    # given a broker hiccup: the thread's send fails and it backs off before trying again
    monkeypatch.setattr(kicker_module, "backoff", lambda *a, **kw: 5.0)
    k, calls = fresh_kicker, []

    def send() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("broker hiccup")
        k.sent += 1

    k._send = send  # type: ignore[method-assign]
    k.request()
    wait_until(lambda: len(calls) == 1, timeout=5)
    # when the process flushes on its way out (the thread is still backing off)
    k.flush()
    # then the kick that is still wanted goes now, not with the process's death
    assert k.sent == 1


def _hung_endpoint() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(100)
    held: list[Any] = []

    def accept() -> None:
        while True:
            conn, _ = s.accept()
            held.append(conn)  # accepted, never answered

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.django_db(transaction=True)
def test_an_import_exits_within_the_flush_bound_when_the_broker_hangs(tmp_path):
    from agreements.tests.test_import import csv_file, row

    # given a broker that accepts connections and never answers, and a flush bound of 2 s
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "OUTBOX_KICK_RELAY": "true",
        "OUTBOX_KICK_FLUSH_SECONDS": "2",
        "AWS_ENDPOINT_URL": _hung_endpoint(),
    }

    def import_seconds(env: dict[str, str], *refs: str) -> float:
        started = time.monotonic()
        f = csv_file(tmp_path, *(row(r) for r in refs))
        subprocess.run(
            [sys.executable, "manage.py", "agreements_import", str(f)],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=120,
        )
        return time.monotonic() - started

    # (the same import with no kick to send, just before and just after: the command's start-up
    # and work on this machine at that moment; a busy machine can double it within seconds)
    quiet = {**env, "OUTBOX_KICK_RELAY": "false"}
    before = import_seconds(quiet, "HB0", "HB00")
    # when the import runs in its own process
    took = import_seconds(env, "HB1", "HB2")
    baseline = max(before, import_seconds(quiet, "HB000", "HB0000"))
    # then its rows are committed and it exits about one flush bound after its work, not one
    # per flush (the command's own and atexit's), nor after the broker client's own timeouts
    assert OutboxEvent.objects.filter(type="agreement.created").count() == 6
    assert took - baseline < 2 + 3, f"the import took {took:.1f}s to exit, {baseline:.1f}s without a kick"


@pytest.mark.django_db(transaction=True)
def test_a_relay_out_of_time_with_rows_due_hands_them_to_a_new_relay_task(
    processes, sqs, monkeypatch, settings
):
    # given a relay task with a one-second budget whose pass outlasts it (a backlog it cannot finish)
    settings.OUTBOX_RELAY_MAX_SECONDS = 1
    with relay_task_running(monkeypatch):
        # when an event commits during that pass (its kick skipped: the relay looks again before
        # it stops), and no other follows
        record_agreements_created(1, "late")
        kick_from_every_process(processes, 0.2)
        assert relay_tasks_queued(sqs) == 0
        time.sleep(1.2)  # past the running relay's budget
    # then the relay, out of time with that row due, sends a relay task for it, not the sweep
    k = kicker_module.kicker
    wait_until(lambda: not k._wanted.is_set() and not k._sending.locked())
    assert OutboxEvent.objects.get(aggregate_id="late-0").published_at is None
    assert relay_tasks_queued(sqs) == 1
