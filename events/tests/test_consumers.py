"""Consumer side: idempotent, order-insensitive handling; poison to the DLQ; push and pull."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest
from django.core.management import call_command
from django.test import override_settings

from events.consuming.config import consumer_configs, push_consumer_names
from events.consuming.pull import pull_once
from events.consuming.push import PushConsumer
from events.consuming.runtime import DUPLICATE, FAILED, HANDLED, POISON, UNHANDLED, process_message
from events.models import ConsumerFailure, ProcessedEvent
from events.signing import signed_attributes
from tests.auditapp import consumers as audit
from tests.auditapp.models import AuditEntry
from tests.factories import AUDIT_QUEUE, deliver, drain, envelope, send
from tests.factories import queue_depth as queue_counts
from tests.helpers import ROOT, database_url, wait_until


# -- process_message, the contract --------------------------------------------------
@pytest.mark.django_db
def test_handles_once_then_acknowledges_duplicates():
    body = json.dumps(envelope("A-1"))
    assert deliver("audit", body).result == HANDLED
    assert deliver("audit", body).result == DUPLICATE
    assert AuditEntry.objects.count() == 1


@pytest.mark.django_db
def test_same_id_with_different_data_is_rejected_with_both_hashes(caplog):
    first = envelope("A-1")
    assert deliver("audit", json.dumps(first), message_id="m1").result == HANDLED
    changed = {**first, "data": {**first["data"], "amount_minor": 1}}
    outcome = deliver("audit", json.dumps(changed), message_id="m2")
    assert outcome.result == POISON
    assert outcome.reason.count("sha256") == 2
    assert "event id reused with different data" in caplog.text
    assert AuditEntry.objects.count() == 1
    assert ConsumerFailure.objects.get(message_id="m2").poisoned


@pytest.mark.django_db
def test_event_type_without_a_handler_is_acknowledged():
    outcome = deliver("audit", json.dumps(envelope("A-1", type="agreement.paused")))
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
        # well-formed JSON, impossible values: poison with the reason, never an exception
        (json.dumps(envelope("A") | {"occurred_at": "2026-13-01T00:00:00Z"}), "not a valid datetime"),
        (json.dumps(envelope("A") | {"occurred_at": "2026-11-27T10:00:00"}), "has no time zone"),
        (json.dumps(envelope("A") | {"aggregate_version": 2**63}), "'aggregate_version' must be from 0"),
        (json.dumps(envelope("A") | {"schema_version": 10**6}), "'schema_version' must be from 1"),
        (json.dumps(envelope("A" * 65)), "'aggregate_id' is longer than 64"),
        (json.dumps(envelope("A\u0000B")), "'aggregate_id' contains control characters"),
        (json.dumps(envelope("A") | {"type": "x" * 101}), "'type' is longer than 100"),
        # a known type from the wrong producer, or about the wrong aggregate: forged
        (json.dumps(envelope("A") | {"producer": "payments"}), "agreement.created is produced by"),
        (json.dumps(envelope("A") | {"aggregate_type": "invoice"}), "aggregate_type 'invoice'"),
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(body, reason):
    outcome = deliver("audit", body, message_id="m-bad")
    assert outcome.result == POISON and not outcome.delete
    assert reason in outcome.reason
    assert not AuditEntry.objects.exists()
    assert ConsumerFailure.objects.get(message_id="m-bad").poisoned


@pytest.mark.django_db
def test_only_messages_signed_with_a_current_key_are_acted_on(settings):
    body = json.dumps(envelope("S-1"))
    good = signed_attributes(body)
    settings.EVENT_SIGNING_KEYS = {**settings.EVENT_SIGNING_KEYS, "old": "retired-key-" + "x" * 30}
    with override_settings(EVENT_SIGNING_KEY_ID="old"):
        by_old_key = signed_attributes(body)
    settings.EVENT_SIGNING_KEYS = {k: v for k, v in settings.EVENT_SIGNING_KEYS.items() if k != "old"}
    tampered = json.dumps(envelope("S-1") | {"aggregate_id": "S-2"})
    cases = {
        "unsigned": (body, None, "unsigned message"),
        "signature of another body": (tampered, good, "bad signature"),
        "retired key": (body, by_old_key, "unknown or retired key 'old'"),
        "garbage signature": (body, {**good, "signature": {"DataType": "String", "StringValue": "0"}}, "bad"),
    }
    for i, (name, (text, attrs, reason)) in enumerate(cases.items()):
        outcome = process_message("audit", text, message_id=f"m-{i}", attributes=attrs)
        assert outcome.result == POISON and reason in outcome.reason, name
    assert not AuditEntry.objects.exists()
    assert ConsumerFailure.objects.filter(poisoned=True).count() == len(cases)
    # and during a rotation both the new and the still-listed old key are accepted
    assert process_message("audit", body, attributes=good).result == HANDLED


@pytest.mark.django_db
def test_a_handler_stuck_on_the_database_gives_its_thread_back_after_the_timeout(settings):
    settings.CONSUMER_HANDLER_TIMEOUT_SECONDS = 0.5
    started = time.monotonic()
    outcome = deliver("audit", json.dumps(envelope("dbsleep-5-x")), message_id="m-stuck")
    assert outcome.result == FAILED and "statement timeout" in outcome.reason
    assert time.monotonic() - started < 4  # not the 5 s the statement wanted
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_a_failure_outside_the_handler_is_an_outcome_not_an_exception(monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("database went away")

    monkeypatch.setattr("events.consuming.runtime.record_processed", broken)
    outcome = deliver("audit", json.dumps(envelope("X-1")), message_id="m-x")
    assert outcome.result == FAILED and "database went away" in outcome.reason
    assert not outcome.delete  # it comes back later


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
    assert audit_consumer.alive
    assert ConsumerFailure.objects.filter(consumer="audit", poisoned=True).count() == 1000


@pytest.mark.slow
def test_push_mode_dead_letters_an_impossible_date_at_once_with_its_reason(audit_consumer, sqs):
    # a well-formed envelope whose occurred_at is month 13 (once: five silent retries, no reason)
    send(sqs, [json.dumps(envelope("M13") | {"occurred_at": "2026-13-01T00:00:00Z"})])
    wait_until(lambda: queue_counts(sqs, AUDIT_QUEUE + "-dlq") == 1, timeout=30)
    [dead] = drain(sqs, AUDIT_QUEUE + "-dlq")
    assert "not a valid datetime" in dead["MessageAttributes"]["error"]["StringValue"]
    failure = ConsumerFailure.objects.get(consumer="audit")
    assert failure.poisoned and failure.failures == 1 and "month must be in 1..12" in failure.first_error
    assert audit.attempts["M13"] == 0 and queue_counts(sqs, AUDIT_QUEUE) == 0


def test_a_worker_named_to_run_a_consumer_switched_to_pull_leaves_it_to_beat(settings):
    # given payments switched to pull (the README's example), and workers started as make run and
    # the README's production set-up start them, each naming its context's consumers
    settings.EVENT_CONSUMERS = {"payments": {"mode": "pull", "batch_size": 20, "interval_seconds": 5}}
    # then no worker polls it too: beat's pull task is its only reader, at its batch size and pace
    assert push_consumer_names("payments") == []
    assert push_consumer_names("invoicing,payments") == ["invoicing"]
    assert "payments" not in push_consumer_names("all")


@pytest.mark.slow
def test_pull_mode_never_takes_more_than_its_batch_size(transactional_db, empty_queues, sqs):
    send(sqs, [json.dumps(envelope(f"P-{i}")) for i in range(25)])
    runs = [pull_once("audit", batch_size=10) for _ in range(4)]
    assert [r.received for r in runs] == [10, 10, 5, 0]
    assert AuditEntry.objects.count() == 25


@pytest.mark.slow
def test_pull_mode_settles_every_good_message_whatever_a_bad_one_does(transactional_db, empty_queues, sqs):
    # given a batch of 8 good messages and one that is well-formed JSON with an impossible date
    good = [json.dumps(envelope(f"PB-{i}")) for i in range(8)]
    bad = json.dumps(envelope("PB-bad") | {"occurred_at": "2026-13-01T00:00:00Z"})
    send(sqs, [*good[:4], bad, *good[4:]])

    # when one pull run takes them
    result = pull_once("audit", batch_size=10)

    # then the 8 are handled and deleted, the bad one is in the DLQ with its reason
    assert result.received == 9 and result.outcomes == {HANDLED: 8, POISON: 1}
    assert AuditEntry.objects.count() == 8
    assert queue_counts(sqs, AUDIT_QUEUE) == 0
    [dead] = drain(sqs, AUDIT_QUEUE + "-dlq")
    assert "not a valid datetime" in dead["MessageAttributes"]["error"]["StringValue"]


@pytest.mark.slow
def test_worker_killed_while_handlers_run_then_restarted_effects_exactly_once(
    transactional_db, empty_queues, sqs
):
    # given 40 slow events and a real worker process running the audit consumer
    events = [envelope(f"slow-300-{i}") for i in range(40)]
    send(sqs, [json.dumps(e) for e in events])
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
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
