"""the kicker's flush when the broker fails or stops answering."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from events.models import OutboxEvent
from events.publishing import kicker as kicker_module
from events.publishing.kicker import RelayKicker
from tests.helpers import ROOT, database_url, wait_until


@pytest.fixture
def fresh_kicker(settings, monkeypatch) -> RelayKicker:
    settings.OUTBOX_KICK_RELAY = True
    monkeypatch.setattr(kicker_module.atexit, "register", lambda fn: fn)  # not this test's process exit
    return RelayKicker()


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
    f = csv_file(tmp_path, row("HB1"), row("HB2"))
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "OUTBOX_KICK_RELAY": "true",
        "OUTBOX_KICK_FLUSH_SECONDS": "2",
        "AWS_ENDPOINT_URL": _hung_endpoint(),
    }
    # when the import runs in its own process
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "manage.py", "agreements_import", str(f)], cwd=ROOT, env=env, check=True, timeout=120
    )
    took = time.monotonic() - started
    # then its rows are committed and it exits about one flush bound after its work, not one
    # per flush (the command's own and atexit's), nor after the broker client's own timeouts
    assert OutboxEvent.objects.filter(type="agreement.created").count() == 2
    assert took < 10, f"the import took {took:.0f}s to exit"
