"""Producer side: the outbox commits with the domain change and the relay publishes it."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from devsupport.net import free_port
from events import contracts, topology
from events.models import Heartbeat, OutboxEvent
from events.publishing import claiming
from events.publishing.outbox import NewEvent, OutboxError, record_event, record_events
from events.publishing.relay import relay_pending
from events.publishing.relay_pass import relay_once
from events.publishing.store import event_store_prune
from events.signing import verify
from tests.factories import agreement_data, drain, invoice_data, record_agreements_created
from tests.helpers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def domain_change(name: str, *, data: dict[str, Any] | None = None, fail: bool = False) -> None:
    """A stand-in service: one domain write and its event, in one transaction."""
    with transaction.atomic():
        Heartbeat.objects.create(name=name, beat_at=timezone.now())
        record_event(
            sender=Heartbeat,
            type=contracts.AGREEMENT_CREATED,
            aggregate_id=name,
            aggregate_version=1,
            data=data or agreement_data(name),
        )
        if fail:
            raise RuntimeError("the service failed after recording its event")


def test_rollback_leaves_no_event_and_no_domain_change():
    with pytest.raises(RuntimeError):
        domain_change("rolled-back", fail=True)
    assert not OutboxEvent.objects.exists()
    assert not Heartbeat.objects.filter(name="rolled-back").exists()


def test_data_off_contract_is_refused_and_the_transaction_rolls_back():
    with pytest.raises(contracts.ContractError, match="currency must match pattern"):
        domain_change("bad", data=agreement_data("bad", currency="euro"))
    assert not OutboxEvent.objects.exists()
    assert not Heartbeat.objects.filter(name="bad").exists()


def test_recording_outside_a_transaction_is_refused():
    assert not connection.in_atomic_block
    with pytest.raises(OutboxError, match="inside the service's transaction"):
        record_event(
            sender=None,
            type=contracts.AGREEMENT_CREATED,
            aggregate_id="x",
            aggregate_version=1,
            data=agreement_data("x"),
        )


def test_oversized_event_is_refused():
    with pytest.raises(contracts.ContractError, match="over the 245760-byte limit"):
        with transaction.atomic():
            record_event(
                sender=None,
                type="alert.dlq_not_empty",
                aggregate_id="dlq",
                aggregate_version=1,
                data={
                    "check": "dlq",
                    "severity": "warning",
                    "summary": "x",
                    "details": {"blob": "x" * (300 * 1024)},
                },
            )


def test_commit_writes_one_row_that_the_relay_publishes_to_subscribed_queues(empty_queues, sqs):
    # when a domain change commits
    domain_change("A-42")

    # then exactly one event row, not yet published
    row = OutboxEvent.objects.get()
    assert (row.type, row.aggregate_id, row.aggregate_version, row.published_at) == (
        "agreement.created",
        "A-42",
        1,
        None,
    )

    # when the relay runs against the real endpoint
    result = relay_pending()

    # then it is marked published and the invoicing queue received the envelope
    assert result.published == 1
    row.refresh_from_db()
    assert row.published_at is not None and row.attempts == 1 and row.sns_message_id
    [msg] = drain(sqs, topology.event_queue_name("invoicing"))
    envelope = json.loads(msg["Body"])
    assert envelope == row.envelope()
    assert set(envelope) == {
        "id",
        "type",
        "schema_version",
        "occurred_at",
        "producer",
        "aggregate_type",
        "aggregate_id",
        "aggregate_version",
        "data",
    }
    assert msg["MessageAttributes"]["event_type"]["StringValue"] == "agreement.created"
    assert msg["MessageAttributes"]["producer"]["StringValue"] == "agreements"
    # signed with the current key over the exact body SNS delivered
    assert verify(msg["Body"], msg["MessageAttributes"]) == settings.EVENT_SIGNING_KEY_ID
    # and the payments consumer, which did not subscribe to it, got nothing
    assert drain(sqs, topology.event_queue_name("payments"), wait=0) == []


@pytest.mark.slow
def test_commit_kicks_the_relay_task_in_a_real_worker(settings, celery_worker, sqs):
    settings.OUTBOX_KICK_RELAY = True
    domain_change("A-kick")
    # the on_commit kick enqueues events.relay_outbox; the worker publishes the row
    wait_until(lambda: OutboxEvent.objects.filter(published_at__isnull=False).exists(), timeout=30)
    msgs = drain(sqs, topology.event_queue_name("invoicing"))
    assert [json.loads(m["Body"])["aggregate_id"] for m in msgs] == ["A-kick"]


def test_endpoint_down_writes_commit_rows_wait_with_error_then_sweep_publishes_all(
    settings, empty_queues, sqs
):
    # given the SNS endpoint is unreachable (a closed port)
    real_endpoint = settings.AWS_ENDPOINT_URL
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    settings.AWS_MAX_ATTEMPTS = 1

    # when domain changes happen and the relay tries to publish
    for i in range(25):
        domain_change(f"down-{i}")
    result = relay_pending(max_seconds=5)

    # then every write committed, nothing was published, the error is on every row
    assert result.published == 0 and result.failed == 25
    rows = OutboxEvent.objects.all()
    assert rows.count() == 25
    assert all(
        r.published_at is None and r.attempts == 1 and "Could not connect" in r.last_error for r in rows
    )
    assert all(r.next_attempt_at > r.last_attempt_at for r in rows)  # backoff before the next try
    assert relay_once().published == 0  # not due yet: the backoff holds

    # when the endpoint answers again and the sweep runs once the backoff passed
    settings.AWS_ENDPOINT_URL = real_endpoint
    OutboxEvent.objects.update(next_attempt_at=timezone.now())
    result = relay_pending()

    # then all of them are published, with both attempts recorded
    assert result.published == 25
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()
    assert set(OutboxEvent.objects.values_list("attempts", flat=True)) == {2}
    got = drain(sqs, topology.event_queue_name("invoicing"))
    assert sorted(json.loads(m["Body"])["aggregate_id"] for m in got) == sorted(
        f"down-{i}" for i in range(25)
    )


def test_two_relays_at_once_publish_every_row_once(empty_queues, sqs):
    # given 300 committed events
    with transaction.atomic():
        record_events(
            sender=None,
            events=[
                NewEvent(contracts.AGREEMENT_CREATED, f"R-{i}", 1, agreement_data(f"R-{i}"))
                for i in range(300)
            ],
        )

    # when two relays run concurrently, in small batches so they interleave
    results = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        try:
            results.append(relay_pending(limit=20))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # then between them they published all 300, each row once
    assert sum(r.published for r in results) == 300
    assert all(r.published > 0 for r in results), "both relays should have claimed rows"
    assert set(OutboxEvent.objects.values_list("attempts", flat=True)) == {1}
    got = Counter(json.loads(m["Body"])["id"] for m in drain(sqs, topology.event_queue_name("invoicing")))
    assert len(got) == 300 and set(got.values()) == {1}


def test_a_full_claim_locks_no_row_it_does_not_take():
    # given 30 due events of each of two producers
    record_agreements_created(30, "L")
    with transaction.atomic():
        ids = [str(uuid.uuid4()) for _ in range(30)]
        record_events(
            sender=None,
            events=[NewEvent(contracts.INVOICE_ISSUED, i, 1, invoice_data(invoice_id=i)) for i in ids],
        )
    claimed, release = threading.Event(), threading.Event()
    first: list[OutboxEvent] = []

    def relay_in_flight() -> None:
        try:
            with transaction.atomic():  # a relay's claim, held while it publishes
                first.extend(claiming.claim(20, alerts_only=False, skip_producers=()))
                claimed.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=relay_in_flight)
    thread.start()
    try:
        assert claimed.wait(10)
        # when another session claims while the first holds its 20 rows
        with transaction.atomic():
            second = claiming.claim(100, alerts_only=False, skip_producers=())
    finally:
        release.set()
        thread.join()
    # then it takes the other 40: the first claim, full, locked no row of the range it stopped in
    # nor of the ranges after it
    assert len(first) == 20 and len(second) == 40
    assert not {r.pk for r in first} & {r.pk for r in second}


def test_the_claim_reads_the_ranges_in_order_and_locks_only_what_it_returns(empty_queues):
    # given the claim's statement as the relay runs it, with a backlog of one producer
    record_agreements_created(50, "PLAN")
    pairs = claiming.ranges()
    with connection.cursor() as cur:
        params = [*claiming._params(pairs), 10, 10]
        cur.execute(f"EXPLAIN (FORMAT JSON) {claiming.claim_sql()}", params)
        plan = cur.fetchone()[0][0]["Plan"]

    # then the planner reads the ranges one after the other (a nested loop over them, in the
    # array's order) and nothing above the row locks reads ahead (no sort, hash or materialize):
    # the claim's order (alerts first) and its locking only the rows it takes depend on it
    def nodes(node: dict[str, Any]) -> list[str]:
        return [node["Node Type"], *(n for child in node.get("Plans", []) for n in nodes(child))]

    assert plan["Node Type"] == "Limit"
    [loop] = plan["Plans"]
    assert loop["Node Type"] == "Nested Loop"
    outer, inner = loop["Plans"]
    assert outer["Node Type"] == "Function Scan"
    assert not {"Sort", "Incremental Sort", "Hash", "Materialize", "Memoize"} & set(nodes(plan))
    assert "LockRows" in nodes(inner)


def test_prune_deletes_only_published_events_past_retention(settings):
    settings.EVENT_RETENTION_DAYS = 90
    for i in range(3):
        domain_change(f"P-{i}")
    old = timezone.now() - timedelta(days=91)
    a, b, c = OutboxEvent.objects.order_by("aggregate_id")
    OutboxEvent.objects.filter(pk=a.pk).update(occurred_at=old, published_at=old)  # old, published
    OutboxEvent.objects.filter(pk=b.pk).update(occurred_at=old)  # old, never published
    assert event_store_prune(batch_size=1) == 1
    assert set(OutboxEvent.objects.values_list("aggregate_id", flat=True)) == {"P-1", "P-2"}


def test_one_event_per_aggregate_version():
    domain_change("dup")
    with pytest.raises(Exception, match="outbox_one_event_per_aggregate_version"):
        with transaction.atomic():
            record_event(
                sender=None,
                type=contracts.AGREEMENT_CREATED,
                aggregate_id="dup",
                aggregate_version=1,
                data=agreement_data("dup"),
            )
    assert OutboxEvent.objects.count() == 1
    assert uuid.UUID(str(OutboxEvent.objects.get().id))


@pytest.mark.slow
def test_a_stream_of_commits_sends_few_relay_kicks_and_every_event_is_published(celery_worker, settings):
    """Each commit asks for a relay run; a busy process must not flood the events queue with them."""
    from events.publishing.kicker import kicker

    settings.OUTBOX_KICK_RELAY = True
    settings.OUTBOX_KICK_MIN_INTERVAL_SECONDS = 0.5
    before = kicker.sent
    started = time.monotonic()
    for i in range(100):
        domain_change(f"K-{i}")
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    wait_until(lambda: not OutboxEvent.objects.filter(published_at__isnull=True).exists(), timeout=60)
    assert OutboxEvent.objects.filter(aggregate_id__startswith="K-").count() == 100
    kicks = kicker.sent - before
    assert 1 <= kicks <= elapsed / 0.5 + 2  # 100 commits, a handful of relay tasks


def test_one_pass_publishes_its_batches_concurrently_and_keeps_each_rows_message_id(
    settings, empty_queues, sqs
):
    # given 250 committed events and four PublishBatch calls in flight
    settings.OUTBOX_RELAY_PUBLISH_CONCURRENCY = 4
    record_agreements_created(250, "C")
    # when one relay pass claims them all
    result = relay_once(limit=250)
    # then 25 calls published every row once, each row marked with its own SNS message id
    assert (result.published, result.failed, result.batches) == (250, 0, 25)
    ids = list(OutboxEvent.objects.values_list("sns_message_id", flat=True))
    assert len(set(ids)) == 250 and "" not in ids
    assert set(OutboxEvent.objects.values_list("attempts", flat=True)) == {1}
    assert not OutboxEvent.objects.filter(next_attempt_at__isnull=False).exists()
    got = Counter(json.loads(m["Body"])["id"] for m in drain(sqs, topology.event_queue_name("invoicing")))
    assert len(got) == 250 and set(got.values()) == {1}
