"""A push consumer on a trickle (``gather_seconds``): after a receive that brought under half of
what it asked for, its poller waits before receiving again, so a steady trickle is taken in
batches (fewer receives, deletes and transactions per message) at a bounded delay.
Real PostgreSQL, the SQS endpoint over HTTP, the consumer's own poller threads."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from events.consuming import push
from events.consuming.config import consumer_configs
from events.consuming.push import PushConsumer
from events.models import ProcessedEvent
from tests.auditapp.models import AuditEntry
from tests.factories import AUDIT_QUEUE, envelope, send
from tests.helpers import wait_until

TRICKLE = 60  # messages, one every 0.05 s: 20 a second for 3 s


@pytest.fixture
def receives(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many messages each of the pollers' receives on the audit queue brought (those that
    brought any)."""
    got: list[int] = []
    real = push.receive

    def counting(queue: str, **kwargs: Any) -> list[dict[str, Any]]:
        messages = real(queue, **kwargs)
        if queue == AUDIT_QUEUE and messages:
            got.append(len(messages))
        return messages

    monkeypatch.setattr(push, "receive", counting)
    yield got


def trickle(sqs: Any) -> float:
    """Send the trickle; returns when the last message was sent (monotonic)."""
    for i in range(TRICKLE):
        send(sqs, [json.dumps(envelope(f"T-{i}"))])
        time.sleep(0.05)
    return time.monotonic()


def run_consumer(settings: Any, gather: float) -> PushConsumer:
    settings.EVENT_CONSUMERS = {"audit": {"gather_seconds": gather}}
    consumer = PushConsumer(consumer_configs()["audit"])
    consumer.start()
    return consumer


@pytest.mark.slow
@pytest.mark.parametrize("gather", [0.0, 1.0])
def test_a_trickle_is_received_in_batches_when_the_consumer_gathers(
    gather, settings, transactional_db, empty_queues, sqs, receives
):
    # given the audit consumer, gathering for `gather` seconds after a thin long poll, or not at all
    consumer = run_consumer(settings, gather)
    try:
        # when events trickle in, one every twentieth of a second
        last = trickle(sqs)
        # then each has its effect once, within the gathering delay of the last one sent
        wait_until(lambda: ProcessedEvent.objects.filter(consumer="audit").count() == TRICKLE, timeout=30)
        done = time.monotonic()
    finally:
        consumer.stop()
    assert AuditEntry.objects.count() == TRICKLE
    assert sum(receives) == TRICKLE
    assert done - last < gather + 3
    per_receive = TRICKLE / len(receives)
    if gather:
        # in batches: what a second brought, taken by a few receives (measured 4.3-5.5 a receive,
        # e.g. [2, 10, 7, 4, 1, 2, 10, 9, ...]: a busy poller's short polls take what is there)
        assert per_receive >= 3.5, receives
    else:
        # without it, as they come (the control; measured 1.9-2.1 a receive)
        assert per_receive <= 2.8, receives


@pytest.mark.slow
def test_a_backlog_is_never_held_back_by_gathering(settings, transactional_db, empty_queues, sqs):
    # given 200 events waiting, and a consumer that would gather for 5 s after a thin long poll
    send(sqs, [json.dumps(envelope(f"B-{i}")) for i in range(200)])
    started = time.monotonic()
    consumer = run_consumer(settings, 5.0)
    try:
        # then full receives and busy short polls take them without a pause: well under 5 s
        wait_until(lambda: ProcessedEvent.objects.filter(consumer="audit").count() == 200, timeout=30)
        took = time.monotonic() - started
    finally:
        consumer.stop()
    assert took < 5, f"{took:.1f} s: a receive of the backlog waited to gather"


@pytest.mark.parametrize("value", [-1, 6, float("inf"), float("nan"), "soon", None, True])
def test_a_gathering_time_out_of_range_is_refused_with_the_setting_named(settings, value):
    # given a gathering time that would stop the poller receiving for good (or make no sense)
    settings.EVENT_CONSUMERS = {"audit": {"gather_seconds": value}}
    # then reading the consumers' configuration says which setting and what is allowed
    with pytest.raises(ValueError, match=r"EVENT_CONSUMERS\['audit'\]\['gather_seconds'\] must be 0 to 5"):
        consumer_configs()
