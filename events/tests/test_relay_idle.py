"""A relay that stops answering (a frozen host, a network cut: here a thread that hangs) lets go
of the relay's lock, and of the rows it claimed, once its session has been idle
OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS: the server ends it, and the next relay publishes everything."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection

from core.per_process import PerProcess
from events.models import OutboxEvent
from events.publishing import relay, relay_pass, sns
from events.publishing.relay import relay_exclusive
from events.publishing.relay_pass import relay_once
from events.topology import aws
from tests.factories import record_agreements_created, slow_publishing

pytestmark = pytest.mark.django_db(transaction=True)


def idle_after(
    settings: Any, monkeypatch: Any, seconds: int, *, longest_call: float, lanes: int = 2, batch: int = 500
) -> None:
    """Relay sessions end idle ``seconds``; a call may take ``longest_call`` s (a pass may start
    calls for half of what is left, 1 s at least); ``lanes`` lanes of ``batch``-row passes."""
    settings.OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS = seconds
    settings.OUTBOX_RELAY_LANES, settings.OUTBOX_RELAY_BATCH_SIZE = lanes, batch
    monkeypatch.setattr(aws, "longest_call_seconds", lambda: longest_call)


@pytest.mark.parametrize("where", ["publishing", "between passes", "a backlog's lanes"])
def test_a_relay_that_stops_answering_lets_go_of_the_lock_and_its_rows(
    settings, monkeypatch, empty_queues, where
):
    # a pass may publish for 0.9 s; with 5-row passes, a full claim: a second lane claims the other 5
    idle_after(settings, monkeypatch, 2, longest_call=0.2, batch=5 if where == "a backlog's lanes" else 500)
    record_agreements_created(10, "stuck")
    hung, release = threading.Semaphore(0), threading.Event()
    frozen: list[threading.Thread] = []
    outcome: dict[str, Any] = {}

    def hangs_in(call: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            me = threading.current_thread()
            if me in frozen or me.name.startswith("outbox-relay-lane"):
                hung.release()
                release.wait(30)
            return call(*args, **kwargs)

        return run

    if where == "between passes":  # holding the lock, no transaction open
        monkeypatch.setattr(relay, "relay_pending", hangs_in(relay.relay_pending))
    else:  # in a pass's transaction (each lane's), its rows claimed
        monkeypatch.setattr(sns, "publish_all", hangs_in(sns.publish_all))

    def frozen_relay() -> None:
        try:
            outcome["result"] = relay_exclusive()
        except Exception as exc:  # noqa: BLE001 - what the frozen relay met when it came back
            outcome["error"] = exc
        finally:
            try:
                connection.close()
            except Exception:  # noqa: BLE001, S110 - a connection the server ended
                pass

    # given a relay that hangs with the relay's lock
    thread = threading.Thread(target=frozen_relay)
    frozen.append(thread)
    thread.start()
    try:
        for _ in range(2 if where == "a backlog's lanes" else 1):
            assert hung.acquire(timeout=10)
        assert relay_exclusive() is None  # another relay leaves the work to it, as it should

        # when it stays silent past the idle timeout, a relay takes over and publishes all ten
        settings.OUTBOX_RELAY_BATCH_SIZE = 100  # (in one pass: the lanes' threads are hung)
        started, result = time.monotonic(), None
        while result is None and time.monotonic() - started < 15:
            time.sleep(0.2)
            result = relay_exclusive()
        assert result is not None, "the hung relay still holds the lock"
        assert result.published == 10, "rows a hung lane claimed are still locked"
        assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()
    finally:
        release.set()
        thread.join(10)
    # and the hung relay, back, finds its session gone: it publishes nothing, marks nothing
    assert "error" in outcome and "result" not in outcome
    assert OutboxEvent.objects.filter(attempts=1).count() == 10


def test_a_pass_on_a_slow_endpoint_publishes_what_it_can_in_time_and_leaves_the_rest_due(
    settings, monkeypatch, empty_queues
):
    # given a relay whose sessions end idle 2 s, calls that may take 0.2 s (a pass may publish for
    # 0.9 s), and an endpoint answering each call in 0.5 s: 16 calls on 4 threads would take 2 s
    idle_after(settings, monkeypatch, 2, longest_call=0.2)
    settings.OUTBOX_RELAY_PUBLISH_CONCURRENCY = 4
    record_agreements_created(160, "slow")
    sent = slow_publishing(monkeypatch, each_call=0.5)

    # when one pass runs in a session bounded as the relay's are
    with connection.cursor() as cur:
        relay._idle_bounded(cur)
    first = relay_once()

    # then it publishes the calls it started in time and marks them: its session was never idle
    # 2 s; the rest are left as they were, due, not failed
    assert 0 < first.published < 160 and first.failed == 0
    left = OutboxEvent.objects.filter(published_at__isnull=True)
    assert left.count() == 160 - first.published
    assert not left.exclude(attempts=0).exists() and not left.exclude(last_error="").exists()
    # and a relay publishes the rest, pass after pass, each event once
    rest = relay_exclusive()
    assert rest is not None and rest.published == 160 - first.published and rest.failed == 0
    assert len(sent) == len(set(sent)) == 160


def test_a_lane_whose_calls_wait_behind_another_lanes_keeps_within_the_idle_timeout(
    settings, monkeypatch, empty_queues
):
    # given two lanes through a backlog sharing one publishing thread, sessions ending idle 3 s,
    # calls that may take 1.2 s (a pass may start calls for 1 s) and take it, but the first (0.95 s:
    # the next call starts just in its pass's time, and ends at 2.15 s)
    idle_after(settings, monkeypatch, 3, longest_call=1.2, batch=20)
    monkeypatch.setattr(sns, "_publisher", PerProcess(lambda: ThreadPoolExecutor(1, "outbox-relay-publish")))
    record_agreements_created(40, "q")
    sent: list[str] = []
    publish_batch = sns.publish_batch

    def slow(topic: str, rows: list[Any], **kw: Any) -> dict[str, str]:
        time.sleep(0.95 if not sent else 1.2)
        sent.extend(str(r.id) for r in rows)
        return publish_batch(topic, rows, **kw)

    monkeypatch.setattr(sns, "publish_batch", slow)

    # when a relay runs (the other lane's first chunk, queued behind those calls, would start at
    # 2.15 s, past its pass's time, and keep that lane's transaction idle to 3.35 s: it is left)
    result = relay_exclusive()

    # then no session was ended under it, and every event was published, once
    assert result is not None and result.published == 40 and result.failed == 0
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()
    assert len(sent) == len(set(sent)) == 40


def test_a_relay_waiting_for_its_lanes_past_the_idle_timeout_keeps_its_lock(
    settings, monkeypatch, empty_queues
):
    # given a relay through a backlog (full claims start a second lane) whose other lane goes on
    # for 3 s after the relay's own passes found nothing left, sessions ending idle 2 s
    idle_after(settings, monkeypatch, 2, longest_call=0.2, batch=5)
    record_agreements_created(10, "w")

    def long_lane(*args: Any) -> Any:
        time.sleep(3)
        return relay_pass.RelayResult()

    monkeypatch.setattr(relay, "_lane", long_lane)

    # when it waits for that lane, holding the relay's lock in a session otherwise idle
    result = relay_exclusive()

    # then the session was kept (not ended as a relay that stopped answering): it let go of the
    # lock itself, and published everything
    assert result is not None and result.published == 10
    with connection.cursor() as cur:
        cur.execute(  # the relay's lock (a bigint key: its high and low halves), in this database
            "SELECT count(*) FROM pg_locks, hashtextextended(%s, 0) AS k WHERE locktype = 'advisory'"
            " AND granted AND objsubid = 1 AND classid::bigint = (k >> 32) & 4294967295"
            " AND objid::bigint = k & 4294967295"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [relay.RELAY_LOCK],
        )
        assert cur.fetchone()[0] == 0
