"""The relay held while a consumer's queue is deep (OUTBOX_RELAY_HOLD_DEPTH, a local emulator's
setting): alerts still go out, the bulk waits until the queue drains or the hold's time is up."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from django.db import transaction

from events import topology
from events.models import OutboxEvent
from events.operations.alerts import record_alert
from events.publishing import holding
from events.publishing.relay import relay_pending
from tests.factories import drain, record_agreements_created, send

pytestmark = pytest.mark.django_db(transaction=True)

INVOICING = topology.event_queue_name("invoicing")


@pytest.fixture
def deep_invoicing_queue(empty_queues: Any, sqs: Any) -> Any:
    """invoicing's queue 20 messages deep (a consumer behind), depths read afresh."""
    send(sqs, [f'{{"n": {i}}}' for i in range(20)], queue=INVOICING)
    holding._seen = (float("-inf"), "", 0)
    yield sqs
    holding._seen = (float("-inf"), "", 0)


def published_at(aggregate_prefix: str) -> list[Any]:
    return list(
        OutboxEvent.objects.filter(aggregate_id__startswith=aggregate_prefix).values_list(
            "published_at", flat=True
        )
    )


def record_an_alert() -> None:
    with transaction.atomic():
        record_alert(
            sender=None,
            check="refund_failed",
            about="r-1",
            severity="critical",
            summary="refused",
            details={},
        )


def test_bulk_queues_are_those_bulk_topics_feed_not_the_alerts_own():
    queues = holding.bulk_queues()
    assert (
        topology.event_queue_name("invoicing") in queues and topology.event_queue_name("payments") in queues
    )
    assert topology.event_queue_name("alerts_mail") not in queues


def test_a_deep_queue_holds_the_bulk_but_not_the_alerts_until_the_hold_is_up(
    deep_invoicing_queue: Any, settings: Any, caplog: Any
):
    # given invoicing's queue past the hold depth, nobody draining it, and bulk events and an alert due
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_HOLD_MAX_SECONDS = 5, 1.5
    record_agreements_created(3, "HOLD")
    record_an_alert()
    seen: dict[str, Any] = {}

    def watch() -> None:  # what is published half a second into the relay
        time.sleep(0.5)
        seen["bulk"] = published_at("HOLD-")
        seen["alert"] = published_at("refund_failed:")

    watcher = threading.Thread(target=watch)
    # when the relay runs
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="events.publishing.holding"):
        watcher.start()
        result = relay_pending(max_seconds=30)
        watcher.join()
    # then the alert went out at once and the bulk waited, then went out once the hold was up
    assert seen["alert"] != [None] and seen["bulk"] == [None] * 3
    assert result.published == 4 and None not in published_at("HOLD-")
    assert time.monotonic() - started >= 1.5
    assert f"{INVOICING} is 20 deep" in caplog.text


def test_the_bulk_goes_out_as_soon_as_the_consumer_catches_up(deep_invoicing_queue: Any, settings: Any):
    # given a deep queue, and a consumer that drains it half a second later
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_HOLD_MAX_SECONDS = 5, 30
    record_agreements_created(3, "CATCH")
    consumer = threading.Timer(0.5, lambda: drain(deep_invoicing_queue, INVOICING, wait=0))
    # when the relay runs
    started = time.monotonic()
    consumer.start()
    result = relay_pending(max_seconds=60)
    took = time.monotonic() - started
    consumer.join()
    # then it published once the queue was shallow, long before the hold's 30 s
    assert result.published == 3 and None not in published_at("CATCH-")
    assert 0.5 <= took < 10


def test_off_by_default_a_deep_queue_holds_nothing(deep_invoicing_queue: Any, settings: Any):
    settings.OUTBOX_RELAY_HOLD_DEPTH = 0
    record_agreements_created(3, "OFF")
    started = time.monotonic()
    assert relay_pending(max_seconds=30).published == 3
    assert time.monotonic() - started < 1.0
