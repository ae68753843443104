"""relay_exclusive's second look, and due rows it cannot claim."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection, transaction

from events.models import OutboxEvent
from events.operations.counts import OutboxStat
from events.operations.health import _checks
from events.publishing import relay, sns
from tests.factories import record_agreements_created

pytestmark = pytest.mark.django_db(transaction=True)


def late_commit_after_first_pass(monkeypatch: Any) -> list[Any]:
    """Make the first relay pass end with an event committing (its kick refused by the lock);
    returns the list of passes made."""
    real_pending, calls = relay.relay_pending, []

    def pending_then_a_late_commit(**kwargs: Any) -> Any:
        result = real_pending(**kwargs)
        if not calls:
            record_agreements_created(1, "late")
        calls.append(result)
        return result

    monkeypatch.setattr(relay, "relay_pending", pending_then_a_late_commit)
    return calls


def test_the_holder_looks_again_after_a_pass_with_a_failed_row(monkeypatch, empty_queues):
    # given a due row SNS refuses (a throttled entry), and an event that commits as the relay
    # finishes (its own relay task found the lock taken and left the work to this one)
    record_agreements_created(1, "F")
    real_publish = sns.publish_batch

    def publish(topic: str, rows: list[Any], **kwargs: Any) -> dict[str, str]:
        failed = {str(r.id): "Throttled: slow down" for r in rows if r.aggregate_id.startswith("F-")}
        rest = [r for r in rows if str(r.id) not in failed]
        return failed | (real_publish(topic, rest, **kwargs) if rest else {})

    monkeypatch.setattr(sns, "publish_batch", publish)
    late_commit_after_first_pass(monkeypatch)
    # when the relay task runs
    relay.relay_exclusive()
    # then the late event is published too (the failed row waits for its backoff)
    late = OutboxEvent.objects.get(aggregate_id="late-0")
    assert late.published_at is not None, "left for the sweep: its kick was refused"
    assert OutboxEvent.objects.get(aggregate_id="F-0").published_at is None


def test_the_relay_does_not_spin_on_due_rows_another_session_has_locked(monkeypatch):
    # given a due row that another session has locked (a relay of the previous release during a
    # rolling deploy, mid-publish; an operator's UPDATE) for a few seconds
    record_agreements_created(1, "L")
    locked, release = threading.Event(), threading.Event()

    def other_session() -> None:
        try:
            with transaction.atomic():
                list(OutboxEvent.objects.select_for_update().filter(aggregate_id="L-0"))
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    t = threading.Thread(target=other_session)
    t.start()
    assert locked.wait(5)
    real_pending, calls = relay.relay_pending, []
    monkeypatch.setattr(relay, "relay_pending", lambda **kw: calls.append(1) or real_pending(**kw))
    try:
        # when the relay task runs (with a 3 s budget)
        started = time.monotonic()
        relay.relay_exclusive(max_seconds=3)
        took = time.monotonic() - started
    finally:
        release.set()
        t.join(10)
    # then it leaves that row to the session that holds it, rather than querying in a loop
    # (holding the relay lock) until its time is up
    assert len(calls) <= 2 and took < 1, f"{len(calls)} passes in {took:.1f}s"


def test_the_relay_task_runs_once_at_a_time_and_its_holder_looks_again(monkeypatch, empty_queues, sqs):
    record_agreements_created(30, "X")
    # given another relay holds the lock (a session of its own)
    held, release, done = threading.Event(), threading.Event(), threading.Event()

    def holder() -> None:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [relay.RELAY_LOCK])
            held.set()
            release.wait(10)
            cur.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [relay.RELAY_LOCK])
        connection.close()
        done.set()

    threading.Thread(target=holder).start()
    assert held.wait(5)
    # when a kicked relay task starts: it leaves the work to the running one
    assert relay.relay_exclusive() is None
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 30
    release.set()
    assert done.wait(5)

    # when an event commits just as the relay finishes its last pass (its kick was refused)
    calls = late_commit_after_first_pass(monkeypatch)
    total = relay.relay_exclusive()
    # then the relay looked again after letting go of the lock and published it too
    assert total is not None and total.published == 31 and len(calls) == 2
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


def test_the_relay_does_not_spin_on_a_due_row_of_a_producer_with_no_topic(monkeypatch, admin_client):
    # given a due row no claim takes (written around the contracts: a producer with no topic, as a
    # raw insert or a retired producer's leftover could be)
    record_agreements_created(1, "R")
    OutboxEvent.objects.filter(aggregate_id="R-0").update(producer="retired")
    real_pending, calls = relay.relay_pending, []
    monkeypatch.setattr(relay, "relay_pending", lambda **kw: calls.append(1) or real_pending(**kw))
    # when the relay task runs (with a 3 s budget)
    started = time.monotonic()
    relay.relay_exclusive(max_seconds=3)
    took = time.monotonic() - started
    # then it stops at once (the row waits, and the outbox-lag alert tells of it) instead of
    # looking again and again until its time is up
    assert len(calls) == 1 and took < 1, f"{len(calls)} passes in {took:.1f}s"
    assert OutboxEvent.objects.get(aggregate_id="R-0").published_at is None
    # and once the outbox lags, its alert names the producer no relay takes and where to see them
    lagging = OutboxStat(unpublished=2, oldest_unpublished_age=10**6, failing=0)
    [lag] = [r for r in _checks([], lagging) if r.check == "outbox_lagging"]
    [repair] = [r for r in lag.repairs if "taken by no relay" in r.text]
    assert repair.text.startswith("unpublished events of producer 'retired' (priority 1) are taken by no")
    assert "only the producers agreements, invoicing, payments, alerts at priorities 0, 1" in repair.text
    assert repair.url.endswith("?producer__exact=retired")
    record_agreements_created(1, "K")
    page = admin_client.get(repair.url).content.decode()
    assert "R-0" in page and "K-0" not in page  # the link lists those rows, and only those
    # (a lag of known producers' rows says nothing of the kind)
    OutboxEvent.objects.filter(aggregate_id="R-0").update(producer="agreements")
    [lag] = [r for r in _checks([], lagging) if r.check == "outbox_lagging"]
    assert not [r for r in lag.repairs if "taken by no relay" in r.text]


def test_a_bulk_topics_row_with_the_alerts_priority_is_published(monkeypatch, empty_queues):
    # given a due agreement event carrying the alerts' priority (an operator's UPDATE, a raw insert)
    record_agreements_created(1, "P")
    OutboxEvent.objects.filter(aggregate_id="P-0").update(priority=0)
    real_pending, calls = relay.relay_pending, []
    monkeypatch.setattr(relay, "relay_pending", lambda **kw: calls.append(1) or real_pending(**kw))
    # when the relay task runs
    started = time.monotonic()
    relay.relay_exclusive(max_seconds=3)
    took = time.monotonic() - started
    # then it is published, at once, like any other
    assert OutboxEvent.objects.get(aggregate_id="P-0").published_at is not None
    assert len(calls) == 1 and took < 1, f"{len(calls)} passes in {took:.1f}s"
