"""The relay held while a consumer's queue is deep (OUTBOX_RELAY_HOLD_DEPTH, a local emulator's
setting): the topics that feed that queue wait until it drains or the hold's time is up; alerts and
the other topics' events still go out."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any

import pytest
from django.db import connection, transaction

from events import contracts, topology
from events.models import OutboxEvent
from events.operations.counts import OutboxStat
from events.operations.health import _checks
from events.operations.observations import QueueStat
from events.publishing import NewEvent, claiming, holding, record_events
from events.publishing.relay import relay_exclusive, relay_pending
from events.topology import aws
from tests.factories import drain, invoice_data, record_agreements_created, record_an_alert, send

pytestmark = pytest.mark.django_db(transaction=True)

INVOICING = topology.event_queue_name("invoicing")


@pytest.fixture(autouse=True)
def claims_start_with_agreements(monkeypatch: Any) -> None:
    """A relay's first claim takes the agreements topic's rows first (topology.TOPICS' order), as
    if no pass had run before: which topic a pass starts with turns with every pass."""
    monkeypatch.setattr(claiming, "_turns", itertools.count())


@pytest.fixture
def deep_invoicing_queue(empty_queues: Any, sqs: Any) -> Any:
    """invoicing's queue 20 messages deep (a consumer behind), depths read afresh."""
    send(sqs, [f'{{"n": {i}}}' for i in range(20)], queue=INVOICING)
    holding.reset()
    yield sqs
    holding.reset()


def published_at(aggregate_prefix: str) -> list[Any]:
    return list(
        OutboxEvent.objects.filter(aggregate_id__startswith=aggregate_prefix).values_list(
            "published_at", flat=True
        )
    )


def test_bulk_queues_are_those_bulk_topics_feed_not_the_alerts_own():
    queues = holding.bulk_queues()
    assert (
        topology.event_queue_name("invoicing") in queues and topology.event_queue_name("payments") in queues
    )
    assert topology.event_queue_name("alerts_mail") not in queues


def test_a_deep_queue_holds_a_backlog_but_not_the_alerts_until_the_hold_is_up(
    deep_invoicing_queue: Any, settings: Any, caplog: Any
):
    # given invoicing's queue past the hold depth, nobody draining it, a backlog of bulk events
    # (more than a pass of 2) and an alert due
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_HOLD_MAX_SECONDS = 5, 2.0
    settings.OUTBOX_RELAY_BATCH_SIZE = 2
    record_agreements_created(5, "HOLD")
    seen: dict[str, Any] = {}

    def watch() -> None:  # an alert raised once the relay holds, and what it has published by then
        try:
            wait_for(lambda: published_at("HOLD-").count(None) == 3, "the first pass")
            record_an_alert()
            wait_for(lambda: published_at("refund_failed:") != [None], "the alert", seconds=1.5)
            seen["bulk"] = published_at("HOLD-").count(None)
        finally:
            connection.close()  # this thread's own: left open, it outlives the test database

    watcher = threading.Thread(target=watch)
    # when the relay task runs
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="events.publishing.holding"):
        watcher.start()
        result = relay_exclusive(max_seconds=60)
        took = time.monotonic() - started
        watcher.join()
    # then the first pass went out, the alert went out while the rest was held, and when the hold
    # ran out one more pass went and the task ended, leaving the last row for a kick or the sweep
    assert seen["bulk"] == 3, "published during the hold"
    assert result is not None and result.held_out and result.published == 5
    assert published_at("HOLD-").count(None) == 1
    assert 2.0 <= took < 8, "held for OUTBOX_RELAY_HOLD_MAX_SECONDS, not the task's 60 s"
    assert f"{INVOICING} is 22 deep" in caplog.text  # read afresh after the first pass: 20 + 2


def record_invoices_issued(numbers: range) -> None:
    """Commit invoice.issued events (aggregates ``FREE-{n}``: the invoicing topic, which feeds payments)."""
    ids = [f"FREE-{n}" for n in numbers]
    with transaction.atomic():
        record_events(
            sender=None,
            events=[NewEvent(contracts.INVOICE_ISSUED, i, 1, invoice_data(invoice_id=i)) for i in ids],
        )


def test_a_deep_queue_holds_only_the_topics_that_feed_it(deep_invoicing_queue: Any, settings: Any):
    # given invoicing's queue deep (its consumer stopped), a backlog of agreement.created (a topic
    # that feeds it) and, behind it, invoice.issued (a topic that feeds payments, whose queue is
    # shallow: it never reaches the depth of 10), passes of 2
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_HOLD_MAX_SECONDS = 10, 3.0
    settings.OUTBOX_RELAY_BATCH_SIZE = 2
    record_agreements_created(5, "HELD")
    record_invoices_issued(range(5))
    seen: dict[str, Any] = {}

    def watch() -> None:  # what the relay publishes while it holds
        try:
            wait_for(lambda: None not in published_at("FREE-"), "the invoice events behind the agreements")
            seen["held"] = published_at("HELD-").count(None)
            record_invoices_issued(range(5, 8))  # while the relay waits for invoicing's queue
            wait_for(lambda: None not in published_at("FREE-"), "the invoice events recorded meanwhile", 1.5)
            seen["held later"] = published_at("HELD-").count(None)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            seen["error"] = exc
        finally:
            connection.close()  # this thread's own

    watcher = threading.Thread(target=watch)
    # when the relay task runs
    started = time.monotonic()
    watcher.start()
    result = relay_exclusive(max_seconds=60)
    took = time.monotonic() - started
    watcher.join()
    # then the invoice events went out during the hold, those recorded during it within a second
    # or so, while the agreements beyond the first pass waited for invoicing's queue; the hold's
    # end published one more pass of them, and the task ended there
    assert "error" not in seen, seen.get("error")
    assert seen == {"held": 3, "held later": 3}
    assert result is not None and result.held_out and result.published == 12
    assert published_at("HELD-").count(None) == 1
    assert 3.0 <= took < 9


def test_a_hold_runs_out_on_time_while_other_topics_keep_the_relay_busy(
    deep_invoicing_queue: Any, settings: Any
):
    # given invoicing's queue deep, 3 agreement events, then 600 invoice events (300 full passes of
    # other topics' events; payments keeps its queue shallow), and a hold of 0.3 s
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_HOLD_MAX_SECONDS = 5, 0.3
    settings.OUTBOX_RELAY_BATCH_SIZE = 2
    record_agreements_created(3, "HELD")
    record_invoices_issued(range(600))
    stop = threading.Event()

    def payments_consumer() -> None:
        while not stop.is_set():
            drain(deep_invoicing_queue, topology.event_queue_name("payments"), wait=0)
            time.sleep(0.01)

    consumer = threading.Thread(target=payments_consumer)
    consumer.start()
    # when the relay task runs
    try:
        result = relay_exclusive(max_seconds=60)
    finally:
        stop.set()
        consumer.join()
    # then the held agreements went out when the hold ran out, before the invoice events were all
    # published, and the relay went on with those rather than ending there
    assert result is not None and not result.held_out and result.published == 603
    free_done = max(published_at("FREE-"))
    assert all(at < free_done for at in published_at("HELD-")), "the hold waited for the others' backlog"


def test_a_trickle_is_never_held(deep_invoicing_queue: Any, settings: Any):
    # a pass that is not full (no backlog) goes out at once, whatever the depth
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_HOLD_MAX_SECONDS = 5, 30
    record_agreements_created(3, "TRICKLE")
    started = time.monotonic()
    assert relay_pending(max_seconds=60).published == 3
    assert time.monotonic() - started < 5


def test_depths_that_cannot_be_read_hold_nothing_and_are_not_tried_again_at_every_pass(
    deep_invoicing_queue: Any, settings: Any, monkeypatch: Any
):
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_HOLD_MAX_SECONDS = 5, 30
    tried: list[str] = []
    monkeypatch.setattr(aws, "queue_depth", lambda name: tried.append(name) or 1 / 0)
    record_agreements_created(5, "BLIND")
    started = time.monotonic()
    assert relay_pending(max_seconds=60, limit=2).published == 5  # three passes, each publishing
    assert time.monotonic() - started < 5
    assert sorted(tried) == holding.bulk_queues()  # once each, not again after each pass


def test_the_backlog_goes_out_as_soon_as_the_consumer_catches_up(deep_invoicing_queue: Any, settings: Any):
    # given a deep queue, a backlog (passes of 2), and a consumer that drains it a second later
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_HOLD_MAX_SECONDS = 5, 30
    record_agreements_created(3, "CATCH")
    consumer = threading.Timer(1.0, lambda: drain(deep_invoicing_queue, INVOICING, wait=0))
    # when the relay runs
    started = time.monotonic()
    consumer.start()
    result = relay_pending(max_seconds=60, limit=2)
    took = time.monotonic() - started
    consumer.join()
    # then it published the rest once the queue was shallow, long before the hold's 30 s
    assert result.published == 3 and not result.held_out and None not in published_at("CATCH-")
    assert 1.0 <= took < 10


def test_a_held_relay_goes_on_as_the_queue_drains_not_at_the_end_of_its_wait(
    deep_invoicing_queue: Any, settings: Any, monkeypatch: Any
):
    # given a deep queue, a backlog, a relay that would wait 4 s between passes (the other topics
    # having nothing), and a consumer that drains the queue 0.3 s into the relay's first wait
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_HOLD_MAX_SECONDS = 5, 30
    monkeypatch.setattr(holding, "HOLD_STEP_SECONDS", 4.0)
    record_agreements_created(3, "ROOM")
    consumer = threading.Timer(0.3, lambda: drain(deep_invoicing_queue, INVOICING, wait=0))
    waits, looks = [], []
    room, held_producers = holding.room, holding.held_producers

    def waiting(held: frozenset[str], seconds: float, **kwargs: Any) -> None:
        if not waits:
            consumer.start()
        waits.append(time.monotonic())
        room(held, seconds, **kwargs)
        waits[-1] = time.monotonic() - waits[-1]

    def looking(*args: Any) -> frozenset[str]:
        looks.append(1)
        return held_producers(*args)

    monkeypatch.setattr(holding, "room", waiting)
    monkeypatch.setattr(holding, "held_producers", looking)
    # when the relay runs
    result = relay_pending(max_seconds=60, limit=2)
    if waits:
        consumer.join()
    # then it waited for room once, and the held events went out within a look at the depths of the
    # queue's draining, not after the whole wait (a consumer kept busy, not left with an empty queue)
    assert result.published == 3 and None not in published_at("ROOM-")
    assert len(waits) == 1 and waits[0] < 2.0, f"waits {waits}: the whole step, not until room"
    assert len(looks) < 100, f"{len(looks)} looks at the depths in {waits[0]:.1f} s: a spin, not a wait"


@pytest.fixture
def invoicing_reads(monkeypatch: Any) -> list[float]:
    """When the relay read invoicing's queue depth (monotonic), each time."""
    reads, queue_depth = [], aws.queue_depth

    def read(name: str) -> int:
        if name == INVOICING:
            reads.append(time.monotonic())
        return queue_depth(name)

    monkeypatch.setattr(aws, "queue_depth", read)
    return reads


def test_a_hold_for_a_stopped_consumer_looks_at_its_queue_less_often_after_a_second(
    deep_invoicing_queue: Any, settings: Any, invoicing_reads: list[float]
):
    # given a deep queue whose consumer is stopped, and a backlog held for 3 s
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_HOLD_MAX_SECONDS = 5, 3.0
    record_agreements_created(3, "PATIENT")
    # when the relay runs
    started = time.monotonic()
    relay_pending(max_seconds=60, limit=2)
    took = time.monotonic() - started
    # then it held for the 3 s, looking at the queue every 0.05 s for its first second and, the
    # queue no shallower, every 0.25 s after (the last read: the warning's, as the hold ran out)
    assert took >= 3.0
    early = [b - a for a, b in itertools.pairwise(invoicing_reads[:-1]) if a - started < 0.9]
    late = [b - a for a, b in itertools.pairwise(invoicing_reads[:-1]) if a - started > 1.6]
    assert early and min(early) < 0.15, f"looks {early} s apart in the hold's first second"
    assert late and min(late) >= 0.2, f"looks {late} s apart once the queue was found stuck"


def test_a_long_hold_for_a_consumer_that_drains_keeps_looking_often(
    deep_invoicing_queue: Any, settings: Any, invoicing_reads: list[float]
):
    # given a backlog held for 3 s, the queue 20 deep, and a consumer taking a message every 0.15 s
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_HOLD_MAX_SECONDS = 2, 3.0
    record_agreements_created(3, "DRAINING")
    stop = threading.Event()

    def slow_consumer() -> None:
        sqs, url = deep_invoicing_queue, aws.queue_url(INVOICING)
        while not stop.wait(0.15):
            for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1).get("Messages", []):
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    consumer = threading.Thread(target=slow_consumer)
    started = time.monotonic()
    consumer.start()
    try:
        relay_pending(max_seconds=60, limit=2)
    finally:
        stop.set()
        consumer.join()
    # then, past its first second, it still looked about every 0.05 s: the queue was getting shallower
    late = [b - a for a, b in itertools.pairwise(invoicing_reads) if 1.3 < a - started < 1.8]
    assert len(late) >= 4 and min(late) < 0.15, f"looks {late} s apart while the consumer drained"


def test_off_by_default_a_deep_queue_holds_nothing(deep_invoicing_queue: Any, settings: Any):
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_HOLD_MAX_SECONDS = 0, 30
    record_agreements_created(5, "OFF")
    started = time.monotonic()
    assert relay_pending(max_seconds=60, limit=2).published == 5
    assert time.monotonic() - started < 5


def wait_for(condition: Any, what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.02)


def test_the_outbox_lag_alert_says_the_relay_holds_and_for_which_queue(settings: Any):
    # given the relay holding for invoicing's queue, 800 deep, and the outbox lagging behind it
    settings.OUTBOX_RELAY_HOLD_DEPTH = 300
    queues = [
        QueueStat(
            name=INVOICING, kind="events", is_dlq=False, visible=700, in_flight=100, delayed=0, oldest_age=9
        ),
        QueueStat(
            name=f"{INVOICING}-dlq",
            kind="events",
            is_dlq=True,
            visible=900,
            in_flight=0,
            delayed=0,
            oldest_age=9,
        ),
    ]
    outbox = OutboxStat(unpublished=5000, oldest_unpublished_age=600, failing=0)
    # when the checks are evaluated
    [lag] = [r for r in _checks(queues, outbox) if r.check == "outbox_lagging"]
    # then the lag's first repair names the queue the relay holds for (the DLQ is not held for)
    assert lag.breached
    assert lag.repairs[0].text.startswith(
        f"the relay holds the events of the agreements and payments topics while {INVOICING} is past 300 "
        "messages (800 now"
    )
    assert sum("the relay holds" in r.text for r in lag.repairs) == 1
