"""Consumer side: idempotent, order-insensitive handling; poison to the DLQ; push and pull."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from events import aws
from events.consumers import DUPLICATE, HANDLED, POISON, UNHANDLED, process_message
from events.models import ConsumerFailure, ProcessedEvent
from events.pollers import PushConsumer, consumer_configs, pull_once
from tests.auditapp import consumers as audit
from tests.auditapp.models import AuditEntry
from tests.helpers import wait_until

from .test_outbox import agreement_data

ROOT = Path(__file__).resolve().parents[2]
AUDIT_QUEUE = "billing-test-audit-events"


def envelope(
    aggregate_id: str,
    *,
    type: str = "agreement.created",
    event_id: str | None = None,
    version: int = 1,
    **data_overrides: Any,
) -> dict[str, Any]:
    return {
        "id": event_id or str(uuid.uuid4()),
        "type": type,
        "schema_version": 1,
        "occurred_at": "2026-11-27T10:00:00Z",
        "producer": "agreements",
        "aggregate_type": "agreement",
        "aggregate_id": aggregate_id,
        "aggregate_version": version,
        "data": agreement_data(aggregate_id, **data_overrides),
    }


def send(sqs: Any, bodies: list[str], queue: str = AUDIT_QUEUE) -> None:
    url = aws.queue_url(queue)
    for i in range(0, len(bodies), 10):
        resp = sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(j), "MessageBody": b} for j, b in enumerate(bodies[i : i + 10])]
        )
        assert not resp.get("Failed"), resp


def queue_counts(sqs: Any, queue: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=aws.queue_url(queue),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


@pytest.fixture
def audit_consumer(transactional_db, empty_queues):
    audit.attempts.clear()
    consumer = PushConsumer(consumer_configs()["audit"])
    consumer.start()
    yield consumer
    consumer.stop()


# -- process_message, the contract --------------------------------------------------
@pytest.mark.django_db
def test_handles_once_then_acknowledges_duplicates():
    body = json.dumps(envelope("A-1"))
    assert process_message("audit", body).result == HANDLED
    assert process_message("audit", body).result == DUPLICATE
    assert AuditEntry.objects.count() == 1


@pytest.mark.django_db
def test_same_id_with_different_data_is_rejected_with_both_hashes(caplog):
    first = envelope("A-1")
    assert process_message("audit", json.dumps(first), message_id="m1").result == HANDLED
    changed = {**first, "data": {**first["data"], "amount_minor": 1}}
    outcome = process_message("audit", json.dumps(changed), message_id="m2")
    assert outcome.result == POISON
    assert outcome.reason.count("sha256") == 2
    assert "event id reused with different data" in caplog.text
    assert AuditEntry.objects.count() == 1
    assert ConsumerFailure.objects.get(message_id="m2").poisoned


@pytest.mark.django_db
def test_event_type_without_a_handler_is_acknowledged():
    outcome = process_message("audit", json.dumps(envelope("A-1", type="agreement.paused")))
    assert outcome.result == UNHANDLED and outcome.delete
    assert not ProcessedEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, reason",
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not an object"),
        (json.dumps({"id": str(uuid.uuid4())}), "envelope lacks"),
        (json.dumps(envelope("A") | {"id": "123"}), "not a UUID"),
        (json.dumps(envelope("A") | {"aggregate_version": "7"}), "'aggregate_version' must be int"),
        (json.dumps(envelope("A") | {"schema_version": 9}), "unknown schema_version 9"),
        (json.dumps(envelope("A", amount_minor=-5)), "amount_minor must be bigger than or equal to 1"),
        (json.dumps(envelope("A", currency="XX")), "currency must match pattern"),
        ('{"id": NaN}', "NaN is not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(body, reason):
    outcome = process_message("audit", body, message_id="m-bad")
    assert outcome.result == POISON and not outcome.delete
    assert reason in outcome.reason
    assert not AuditEntry.objects.exists()


# -- push mode over the real queue -----------------------------------------------------
@pytest.mark.slow
def test_every_event_delivered_three_times_has_its_effect_once(audit_consumer, sqs):
    events = [envelope(f"A-{i}") for i in range(30)]
    bodies = [json.dumps(e) for e in events for _ in range(3)]
    random.Random(7).shuffle(bodies)
    send(sqs, bodies)
    wait_until(
        lambda: (
            ProcessedEvent.objects.filter(consumer="audit").count() == 30
            and queue_counts(sqs, AUDIT_QUEUE) == 0
        ),
        timeout=60,
    )
    assert sorted(AuditEntry.objects.values_list("aggregate_id", flat=True)) == sorted(
        f"A-{i}" for i in range(30)
    )


@pytest.mark.slow
def test_handler_failing_twice_then_succeeding_has_effect_once(audit_consumer, sqs):
    send(sqs, [json.dumps(envelope("flaky-2-x"))])
    wait_until(lambda: AuditEntry.objects.filter(aggregate_id="flaky-2-x").exists(), timeout=30)
    wait_until(lambda: queue_counts(sqs, AUDIT_QUEUE) == 0, timeout=30)
    assert audit.attempts["flaky-2-x"] == 3
    assert AuditEntry.objects.filter(aggregate_id="flaky-2-x").count() == 1
    assert queue_counts(sqs, AUDIT_QUEUE + "-dlq") == 0


@pytest.mark.slow
def test_always_failing_lands_in_dlq_then_redrive_after_the_fix_has_effect_once(audit_consumer, sqs, capsys):
    # given a handler that always fails for this event
    event = envelope("fail-always-1")
    send(sqs, [json.dumps(event)])

    # then after maxReceiveCount receives SQS moves it to the DLQ
    wait_until(lambda: queue_counts(sqs, AUDIT_QUEUE + "-dlq") == 1, timeout=60)
    assert audit.attempts["fail-always-1"] == 5
    assert not AuditEntry.objects.exists()

    # and dlq_inspect shows it, with the first error, without consuming it
    call_command("dlq_inspect", "audit")
    out = capsys.readouterr().out
    assert "1 message(s)" in out and "agreement.created" in out and "agreement:fail-always-1" in out
    assert "audit handler always fails" in out
    assert queue_counts(sqs, AUDIT_QUEUE + "-dlq") == 1

    # when the handler is fixed and the DLQ redriven
    audit_consumer.stop()
    new = PushConsumer(consumer_configs()["audit"])
    try:
        call_command("dlq_redrive", "audit", "--dry-run")
        assert "would move 1 of 1" in capsys.readouterr().out
        assert queue_counts(sqs, AUDIT_QUEUE + "-dlq") == 1
        with _fixed("fail-always-1"):
            new.start()
            call_command("dlq_redrive", "audit")
            # then its effect exists exactly once and both queues are empty
            wait_until(lambda: AuditEntry.objects.filter(aggregate_id="fail-always-1").exists(), timeout=30)
            wait_until(lambda: queue_counts(sqs, AUDIT_QUEUE) == 0, timeout=30)
    finally:
        new.stop()
    assert AuditEntry.objects.filter(aggregate_id="fail-always-1").count() == 1
    assert queue_counts(sqs, AUDIT_QUEUE + "-dlq") == 0


class _fixed:
    """Deploy the fix: the audit handler stops failing for ``key``."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __enter__(self) -> None:
        audit.FIXED.add(self.key)

    def __exit__(self, *exc: object) -> None:
        audit.FIXED.discard(self.key)


@pytest.mark.slow
def test_malformed_messages_interleaved_with_good_ones(audit_consumer, sqs):
    bad_kinds = [
        "not json",
        "[]",
        "{}",
        json.dumps({"id": "x"}),
        json.dumps(envelope("bad") | {"schema_version": 42}),
        json.dumps(envelope("bad", currency="eur")),
        json.dumps(envelope("bad") | {"occurred_at": "yesterday"}),
    ]
    good = [envelope(f"G-{i}") for i in range(100)]
    bodies = [bad_kinds[i % len(bad_kinds)] for i in range(1000)] + [json.dumps(e) for e in good]
    random.Random(11).shuffle(bodies)
    send(sqs, bodies)
    wait_until(lambda: AuditEntry.objects.count() == 100, timeout=180)
    wait_until(lambda: queue_counts(sqs, AUDIT_QUEUE + "-dlq") == 1000, timeout=120)
    assert queue_counts(sqs, AUDIT_QUEUE) == 0
    assert audit_consumer.thread.is_alive()
    assert ConsumerFailure.objects.filter(consumer="audit", poisoned=True).count() == 1000


@pytest.mark.slow
def test_pull_mode_never_takes_more_than_its_batch_size(transactional_db, empty_queues, sqs):
    send(sqs, [json.dumps(envelope(f"P-{i}")) for i in range(25)])
    runs = [pull_once("audit", batch_size=10) for _ in range(4)]
    assert [r.received for r in runs] == [10, 10, 5, 0]
    assert AuditEntry.objects.count() == 25


@pytest.mark.slow
def test_worker_killed_while_handlers_run_then_restarted_effects_exactly_once(
    transactional_db, empty_queues, sqs
):
    # given 40 slow events and a real worker process running the audit consumer
    events = [envelope(f"slow-300-{i}") for i in range(40)]
    send(sqs, [json.dumps(e) for e in events])
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "EVENT_CONSUMERS_IN_WORKER": "audit",
    }
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "billing_project",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        "1",
        "-Q",
        "default",
        "-l",
        "WARNING",
        "-n",
        f"kill-{uuid.uuid4().hex[:6]}@%h",
    ]
    worker = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    try:
        # when it is SIGKILLed while handlers are mid-flight
        wait_until(lambda: AuditEntry.objects.count() >= 4, timeout=60)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        done_before = AuditEntry.objects.count()
        assert done_before < 40
        # and restarted
        worker = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
        # then every event's effect exists exactly once
        wait_until(lambda: ProcessedEvent.objects.filter(consumer="audit").count() == 40, timeout=120)
        wait_until(lambda: queue_counts(sqs, AUDIT_QUEUE) == 0, timeout=60)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    per_event = {}
    for e in AuditEntry.objects.all():
        per_event[e.aggregate_id] = per_event.get(e.aggregate_id, 0) + 1
    assert per_event == {f"slow-300-{i}": 1 for i in range(40)}


def _test_database_url() -> str:
    s = connection.settings_dict
    host = s["HOST"] or "127.0.0.1"
    if host.startswith("/"):
        host = host.replace("/", "%2F")
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{host}:{s['PORT'] or 5432}/{s['NAME']}"
