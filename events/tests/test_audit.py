"""The delivery audit, in-process path: what is missing per consumer and type, what is not (handled,
dead-lettered, in flight, unsubscribed, unpublished), the backfill, the gap's alert and the watermark.
Real PostgreSQL and the SQS endpoint over HTTP; messages are consumed with the consumer runtime."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models import F

from events import contracts, topology
from events.audit import delivery_audit_run
from events.consuming.runtime import process_message
from events.models import ConsumerFailure, DeliveryAudit, DeliveryResend, OutboxEvent, ProcessedEvent
from events.publishing.outbox import NewEvent, record_events
from events.publishing.relay import relay_pending
from events.signing import verify
from events.tasks import delivery_audit
from tests.factories import agreement_data, drain

pytestmark = pytest.mark.django_db(transaction=True)


def record(*events: tuple[str, str, int]) -> list[NewEvent]:
    """Commit agreement events (type, aggregate id, version) in one transaction."""
    data = {
        contracts.AGREEMENT_CREATED: lambda a: agreement_data(a),
        contracts.AGREEMENT_CANCELLED: lambda a: {
            "agreement_id": a,
            "effective_date": "2026-12-01",
            "at_period_end": False,
        },
        contracts.AGREEMENT_PRICE_CHANGED: lambda a: {
            "agreement_id": a,
            "amount_minor": 500,
            "currency": "EUR",
            "effective_from": "2026-12-01",
        },
    }
    with transaction.atomic():
        return record_events(sender=None, events=[NewEvent(t, a, v, data[t](a)) for t, a, v in events])


def publish(*events: tuple[str, str, int]) -> list[NewEvent]:
    recorded = record(*events)
    relay_pending()
    return recorded


def consume(sqs, consumer: str, keep=lambda envelope: True) -> list[dict]:
    """Take everything off ``consumer``'s queue; the messages ``keep`` selects are handled by the
    consumer runtime (signature checked), the others are lost. Returns the envelopes taken."""
    taken = []
    for m in drain(sqs, topology.event_queue_name(consumer), wait=0):
        envelope = json.loads(m["Body"])
        taken.append(envelope | {"_attrs": m.get("MessageAttributes", {})})
        if keep(envelope):
            process_message(consumer, m["Body"], message_id=m["MessageId"], attributes=m["MessageAttributes"])
    return taken


def age(seconds: int = 3600) -> None:
    """Everything published, re-sent and audited so far happened ``seconds`` earlier (past the grace
    period): time passes for every stored time at once."""
    DeliveryAudit.objects.exclude(watermark=None).update(
        watermark=F("watermark") - timedelta(seconds=seconds)
    )
    back = timedelta(seconds=seconds)
    OutboxEvent.objects.exclude(published_at=None).update(
        occurred_at=F("occurred_at") - back, published_at=F("published_at") - back
    )
    DeliveryResend.objects.update(resent_at=F("resent_at") - timedelta(seconds=seconds))


def counts(report) -> dict[str, tuple[int, int, int, int, int]]:
    return {
        t: (c.published, c.handled, c.dead_lettered, c.in_flight + c.resent, c.missing)
        for t, c in report.counts.items()
    }


def test_missing_events_are_found_per_consumer_and_type_and_filter_policies_are_respected(empty_queues, sqs):
    # given agreement events; the test consumer "audit" subscribes to created and cancelled only
    publish(
        ("agreement.created", "A-0", 1),
        ("agreement.created", "A-1", 1),
        ("agreement.created", "A-2", 1),
        ("agreement.cancelled", "A-0", 2),
        ("agreement.price_changed", "A-1", 2),
    )
    record(("agreement.created", "A-unpublished", 1))  # the relay's to send: not audited
    # "audit" handles A-0's events and loses the rest; invoicing loses everything
    consume(sqs, "audit", keep=lambda e: e["aggregate_id"] == "A-0")
    consume(sqs, "invoicing", keep=lambda e: False)
    age()

    audit = delivery_audit_run(consumer="audit")
    invoicing = delivery_audit_run(consumer="invoicing")

    # published / handled / dead-lettered / in flight / missing
    assert counts(audit) == {
        "agreement.cancelled": (1, 1, 0, 0, 0),
        "agreement.created": (3, 1, 0, 0, 2),  # price_changed: not subscribed, not blamed
    }
    assert counts(invoicing) == {
        "agreement.cancelled": (1, 0, 0, 0, 1),
        "agreement.created": (3, 0, 0, 0, 3),
        "agreement.price_changed": (1, 0, 0, 0, 1),
    }
    assert audit.missing_types == ["agreement.created"] and audit.resent == 0  # no --repair
    assert delivery_audit_run(consumer="payments").totals.published == 0  # nothing it subscribes to


def test_dead_lettered_and_in_flight_events_are_not_missing(empty_queues, sqs):
    # given an event whose handler always fails (it retries until the DLQ takes it), one handled
    publish(("agreement.created", "fail-always-1", 1), ("agreement.created", "ok-1", 1))
    consume(sqs, "audit")
    assert ConsumerFailure.objects.filter(consumer="audit", aggregate_id="fail-always-1").exists()
    age()
    # and one just published, still queued
    publish(("agreement.created", "fresh-1", 1))

    report = delivery_audit_run(consumer="audit", repair=True)

    # published / handled / dead-lettered / in flight / missing
    assert counts(report) == {"agreement.created": (3, 1, 1, 1, 0)}
    assert report.resent == 0
    queued = drain(sqs, topology.event_queue_name("audit"), wait=0)
    assert [json.loads(m["Body"])["aggregate_id"] for m in queued] == ["fresh-1"]  # nothing re-sent


def test_backfill_resends_only_to_that_consumers_queue_signed_and_at_most_n_per_pass(empty_queues, sqs):
    # given 25 events the audit consumer lost (invoicing handled its copies)
    publish(*[("agreement.created", f"L-{i:02d}", 1) for i in range(25)])
    consume(sqs, "audit", keep=lambda e: False)
    consume(sqs, "invoicing")
    age()
    oldest_first = [
        str(i) for i in OutboxEvent.objects.order_by("published_at", "id").values_list("id", flat=True)
    ]

    # when a repairing pass may re-send 10
    first = delivery_audit_run(consumer="audit", repair=True, max_resend=10)

    # then the 10 oldest missing go to the audit queue only, signed, as replays, same bytes
    assert first.totals.missing == 25 and first.resent == 10
    got = consume(sqs, "audit", keep=lambda e: False)  # and are lost again
    assert sorted(e["id"] for e in got) == sorted(oldest_first[:10])
    for e in got:
        attrs = e.pop("_attrs")
        original = OutboxEvent.objects.get(id=e["id"])
        assert json.loads(original.message_body()) == e
        verify(original.message_body(), attrs)  # raises if unsigned or forged
        assert attrs["replayed"]["StringValue"] == "true"
    assert drain(sqs, topology.event_queue_name("invoicing"), wait=0) == []
    assert drain(sqs, topology.event_queue_name("payments"), wait=0) == []

    # a second pass leaves the 10 in flight (re-sent within the grace period) and sends the next 10
    second = delivery_audit_run(consumer="audit", repair=True, max_resend=10)
    assert (second.totals.resent, second.totals.missing, second.resent) == (10, 15, 10)
    assert sorted(e["id"] for e in consume(sqs, "audit", keep=lambda e: False)) == sorted(oldest_first[10:20])

    # once the grace period is over they count as lost again, and go again, oldest first
    age()
    third = delivery_audit_run(consumer="audit", repair=True, max_resend=10)
    assert third.totals.missing == 25 and third.resent == 10
    assert sorted(e["id"] for e in consume(sqs, "audit")) == sorted(oldest_first[:10])  # handled now
    assert DeliveryResend.objects.get(consumer="audit", event_id=oldest_first[0]).times == 2

    # until every one is handled: then nothing is missing and nothing is re-sent
    while delivery_audit_run(consumer="audit", repair=True, max_resend=10).resent:
        consume(sqs, "audit")
    final = delivery_audit_run(consumer="audit", full=True)
    assert final.totals.handled == 25 and not final.gap
    assert ProcessedEvent.objects.filter(consumer="audit").count() == 25
    assert not DeliveryResend.objects.filter(consumer="audit").exists()  # forgotten once accounted for


def test_one_delivery_gap_alert_per_gap_then_resolved(settings, empty_queues, sqs):
    settings.DELIVERY_AUDIT_CONSUMERS = "audit"
    publish(*[("agreement.created", f"G-{i}", 1) for i in range(3)])
    consume(sqs, "audit", keep=lambda e: e["aggregate_id"] == "G-0")
    drain(sqs, topology.event_queue_name("alerts_mail"), wait=0)
    age()
    alerts = OutboxEvent.objects.filter(producer="alerts")

    # when beat's pass finds the gap: one alert, published at once to the alerts topic
    assert delivery_audit() == {"audit": 2}
    [gap] = alerts.filter(type="alert.delivery_gap")
    assert gap.published_at is not None
    assert gap.data["details"] == {
        "consumer": "audit",
        "count": 2,
        "oldest_missing": gap.data["details"]["oldest_missing"],
        "event_types": ["agreement.created"],
        "resent": 2,
    }
    assert gap.data["details"]["oldest_missing"] is not None
    mailed = [
        json.loads(m["Body"])["type"] for m in drain(sqs, topology.event_queue_name("alerts_mail"), wait=0)
    ]
    assert mailed == ["alert.delivery_gap"]

    # the re-sent events in flight: the gap is still open, no second alert
    assert delivery_audit() == {"audit": 0}
    assert alerts.count() == 1

    # handled: alert.resolved, once
    consume(sqs, "audit")
    delivery_audit()
    delivery_audit()
    assert list(alerts.order_by("aggregate_version").values_list("type", flat=True)) == [
        "alert.delivery_gap",
        "alert.resolved",
    ]
    resolved = alerts.get(type="alert.resolved")
    assert resolved.data["details"] == {"check": "delivery_gap", "consumer": "audit"}


def test_the_watermark_advances_only_over_accounted_events(empty_queues, sqs):
    publish(("agreement.created", "W-0", 1), ("agreement.created", "W-1", 1))
    consume(sqs, "audit")
    age()
    first = delivery_audit_run(consumer="audit")
    assert first.watermark_before is None and first.audited_from is None  # first pass: everything
    assert first.watermark_after == first.horizon  # all accounted for: up to the grace horizon

    publish(("agreement.created", "W-2", 1), ("agreement.created", "W-3", 1))
    consume(sqs, "audit", keep=lambda e: e["aggregate_id"] == "W-3")  # W-2 lost
    age()
    lost = OutboxEvent.objects.get(aggregate_id="W-2")
    mark = DeliveryAudit.objects.get(consumer="audit").watermark
    second = delivery_audit_run(consumer="audit")
    assert second.audited_from == mark
    assert counts(second) == {"agreement.created": (2, 1, 0, 0, 1)}  # reads only new history
    assert second.watermark_after == lost.published_at  # stops at the lost event
    assert DeliveryAudit.objects.get(consumer="audit").watermark == lost.published_at

    # a dry run changes nothing; a full audit reads the whole store again
    assert delivery_audit_run(consumer="audit", dry_run=True).watermark_after == lost.published_at
    full = delivery_audit_run(consumer="audit", full=True)
    assert counts(full) == {"agreement.created": (4, 3, 0, 0, 1)}


def test_a_late_commit_is_never_skipped(settings, empty_queues, sqs):
    # given a long transaction that records an event and commits only later (an import's batch)
    settings.DELIVERY_AUDIT_GRACE_SECONDS = 1
    recorded, release = threading.Event(), threading.Event()

    def long_transaction() -> None:
        try:
            with transaction.atomic():
                record(("agreement.created", "LATE", 1))
                recorded.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=long_transaction)
    thread.start()
    assert recorded.wait(10)
    # meanwhile newer events commit, are delivered and audited past the late one's occurred_at
    publish(("agreement.created", "EARLY", 1))
    consume(sqs, "audit")
    time.sleep(1.5)
    before = delivery_audit_run(consumer="audit")
    assert before.totals.handled == 1 and before.totals.missing == 0

    # when the late transaction commits and its event, once published, is lost
    release.set()
    thread.join(10)
    late = OutboxEvent.objects.get(aggregate_id="LATE")
    assert late.occurred_at < before.watermark_after  # an occurred_at watermark would skip it
    relay_pending()
    consume(sqs, "audit", keep=lambda e: False)
    time.sleep(1.5)

    # then the next pass still finds it
    after = delivery_audit_run(consumer="audit", repair=True)
    assert after.totals.missing == 1 and after.resent == 1
    assert [e["aggregate_id"] for e in consume(sqs, "audit")] == ["LATE"]
