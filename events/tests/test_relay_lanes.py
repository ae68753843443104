"""A relay working through a backlog in lanes: one lane's claim overlaps another's publishing."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import pytest

from events import topology
from events.models import OutboxEvent
from events.publishing import claiming, relay, sns
from events.publishing.relay import relay_pending
from events.publishing.relay_pass import RelayResult
from events.topology import aws
from events.topology.provisioning import provision
from tests.factories import drain, record_agreements_created

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def timeline(monkeypatch: Any) -> list[tuple[str, int, float, float]]:
    """(what, thread, start, end) of every claim and every pass's publishing, the real calls timed
    (each publishing 100 ms longer, as a remote endpoint's round trips would be)."""
    spans: list[tuple[str, int, float, float]] = []
    real_claim, real_publish_all = claiming.claim, sns.publish_all

    def timed(what: str, call: Any, pause: float = 0.0) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return call(*args, **kwargs)
            finally:
                time.sleep(pause)
                spans.append((what, threading.get_ident(), start, time.monotonic()))

        return run

    monkeypatch.setattr(claiming, "claim", timed("claim", real_claim))
    monkeypatch.setattr(sns, "publish_all", timed("publish", real_publish_all, 0.1))
    return spans


def test_a_backlog_is_published_in_two_lanes_each_claiming_while_the_other_publishes(
    settings, empty_queues, sqs, timeline
):
    # given a backlog of 600 events, and a relay that does not hold (production's default)
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_LANES = 0, 2
    record_agreements_created(600, "LANE")

    # when the relay publishes them, 50 a pass
    result = relay_pending(limit=50)
    returned = time.monotonic()

    # then every event is published once, by passes in two threads
    assert result.published == 600 and result.failed == 0
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()
    got = Counter(json.loads(m["Body"])["id"] for m in drain(sqs, topology.event_queue_name("invoicing")))
    assert len(got) == 600 and set(got.values()) == {1}
    assert len({thread for what, thread, *_ in timeline if what == "claim"}) == 2
    # and a lane claimed rows while the other's batches were being published
    claims = [(t, s, e) for what, t, s, e in timeline if what == "claim"]
    publishing = [(t, s, e) for what, t, s, e in timeline if what == "publish"]
    assert any(t1 != t2 and s1 < e2 and s2 < e1 for t1, s1, e1 in claims for t2, s2, e2 in publishing)
    # and the second lane started with the first pass, not after it: its first claim came while
    # the first pass's batches were being published
    own = threading.get_ident()
    first_publish_end = min(e for what, t, s, e in publishing_spans(timeline) if t == own)
    assert min(s for t, s, _ in claims if t != own) < first_publish_end
    # and no lane was still at work when the relay returned
    assert all(end <= returned for *_, end in timeline)


def publishing_spans(timeline: list[tuple[str, int, float, float]]) -> list[tuple[str, int, float, float]]:
    return [span for span in timeline if span[0] == "publish"]


def test_a_relay_that_may_hold_runs_one_lane(settings, empty_queues, timeline):
    # given a backlog, and a relay held for its consumers (a local emulator's setting)
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_LANES = 300, 2
    record_agreements_created(200, "ONE")

    # when it publishes them, 50 a pass
    assert relay_pending(limit=50).published == 200

    # then every pass ran in the relay's own thread
    assert {thread for _what, thread, _start, _end in timeline} == {threading.get_ident()}


def test_a_lane_that_fails_fails_the_relay_at_its_next_full_pass(settings, empty_queues, monkeypatch):
    # given a backlog, and passes that fail with an error no retry covers in any lane but the relay's own
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_LANES = 0, 2
    record_agreements_created(300, "FAIL")
    own, real_once, running = threading.get_ident(), relay.relay_once, Counter()

    def once_failing_elsewhere(**kwargs: Any) -> RelayResult:
        if threading.get_ident() != own:
            raise RuntimeError("a bug")
        running["passes"] += 1
        return real_once(**kwargs)

    monkeypatch.setattr(relay, "relay_once", once_failing_elsewhere)

    # when the relay publishes them, 50 a pass: the other lane fails at its first pass
    with pytest.raises(RuntimeError, match="a bug"):
        relay_pending(limit=50)

    # then the error reaches the relay's caller (its task fails, and is retried: the sweep
    # publishes the rest), not lost, nor left until the relay's own lane had drained the backlog
    assert 1 <= running["passes"] < 6
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() >= 50


def test_when_the_relays_own_lane_fails_the_others_end_after_the_pass_they_are_in(
    settings, empty_queues, monkeypatch, timeline
):
    # given a backlog of 600 events, and the relay's own lane failing at its third pass
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_LANES = 0, 2
    record_agreements_created(600, "STOP")
    own, real_once, failed_at = threading.get_ident(), relay.relay_once, []

    def once_failing_here(**kwargs: Any) -> RelayResult:
        if threading.get_ident() == own and len([s for s in timeline if s[:2] == ("claim", own)]) >= 2:
            failed_at.append(time.monotonic())
            raise RuntimeError("a bug")
        return real_once(**kwargs)

    monkeypatch.setattr(relay, "relay_once", once_failing_here)

    # when the relay publishes them, 50 a pass
    with pytest.raises(RuntimeError, match="a bug"):
        relay_pending(limit=50)
    returned = time.monotonic()

    # then the other lane did not go on to publish the rest: it started at most the pass it was
    # about to start, and had ended before the error reached the relay's caller
    lane_claims = [start for what, thread, start, _ in timeline if what == "claim" and thread != own]
    assert lane_claims, "the other lane ran"
    assert len([start for start in lane_claims if start > failed_at[0]]) <= 1
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() >= 200
    assert all(end <= returned for *_, end in timeline)


def test_a_pass_whose_calls_fail_ends_every_lane(settings, empty_queues, timeline):
    # given a backlog of 600 events, and an endpoint refusing every publish: their topic is gone
    # (deleted by mistake, or not provisioned in this region)
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_LANES = 0, 2
    record_agreements_created(600, "DOWN")
    aws.client("sns").delete_topic(TopicArn=aws.topic_arn(topology.topic_name(topology.AGREEMENTS)))
    try:
        # when the relay tries, 50 a pass
        result = relay_pending(limit=50)
    finally:
        provision(topology.build())  # the topic and its subscription back, as every other test expects

    # then it gives up after the failing pass, and the lane that pass's full claim started after
    # at most one pass of its own: not a lane going on through the backlog against a failing endpoint
    assert result.published == 0 and 50 <= result.failed <= 100
    assert len([span for span in timeline if span[0] == "claim"]) <= 3  # the lane's last looks for none
    assert OutboxEvent.objects.filter(attempts=0).count() >= 500  # the rest untouched, for the sweep


def test_a_lane_whose_calls_fail_ends_the_relay_after_the_pass_it_is_in(
    settings, empty_queues, monkeypatch, timeline
):
    # given a backlog of 600 events, and publishes refused in the other lane's thread only
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_LANES = 0, 2
    record_agreements_created(600, "HALF")
    own, real_publish_all = threading.get_ident(), sns.publish_all

    def refused_elsewhere(chunks: Any, **kwargs: Any) -> dict[str, str]:
        if threading.get_ident() == own:
            return real_publish_all(chunks, **kwargs)
        return {str(r.id): "Throttling: rate exceeded" for _, c in chunks for r in c}

    monkeypatch.setattr(sns, "publish_all", refused_elsewhere)

    # when the relay publishes them, 50 a pass
    result = relay_pending(limit=50)

    # then the relay's own lane ended too, as a relay of one lane ends at a pass with failures
    # (the rest waits for the next kick or the sweep), instead of publishing the whole backlog
    assert result.failed == 50
    assert result.published <= 150
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() >= 450
