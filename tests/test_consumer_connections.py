"""A consumer's handler thread keeps its database connection from batch to batch (CONN_MAX_AGE),
pings it only after it sat idle or the server sent it something (core.db.unit_of_work), and loses
nothing when the server drops it between two batches. Real PostgreSQL."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import close_old_connections, connection
from django.db.backends.base.base import BaseDatabaseWrapper

from core import db
from events.consuming.batch import Received, process_batch
from events.consuming.config import consumer_configs
from events.consuming.runtime import FAILED, HANDLED, POISON, ConsumerRuntime, process_message
from events.consuming.sqs import handle_batch
from events.models import ConsumerFailure
from events.signing import signed_attributes
from invoicing.models import BillableAgreement
from tests.auditapp import consumers as audit_consumer
from tests.auditapp.models import AuditEntry
from tests.factories import envelope
from tests.helpers import terminate_backends


def sqs_messages(prefix: str, n: int = 10) -> list[dict[str, Any]]:
    """``n`` agreement.created messages as ReceiveMessage returns them."""
    bodies = [json.dumps(envelope(f"{prefix}-{i}")) for i in range(n)]
    return [
        {
            "Body": b,
            "MessageId": str(uuid.uuid4()),
            "ReceiptHandle": f"rh-{i}",
            "MessageAttributes": signed_attributes(b),
            "Attributes": {"ApproximateReceiveCount": "1"},
        }
        for i, b in enumerate(bodies)
    ]


@pytest.fixture
def kept_connection(transactional_db: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """This thread's connection kept for a minute (the test settings keep none), as a worker's;
    yields the list of health pings (``SELECT 1``) Django sends on it."""
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)
    connection.close()  # the next one opens under the new age
    pings: list[str] = []
    real = BaseDatabaseWrapper.close_if_health_check_failed

    def counted(self: BaseDatabaseWrapper) -> None:
        if self.connection is not None and self.health_check_enabled and not self.health_check_done:
            pings.append(self.alias)
        real(self)

    monkeypatch.setattr(BaseDatabaseWrapper, "close_if_health_check_failed", counted)
    yield pings
    connection.close()


def backend_pid() -> int:
    """This thread's PostgreSQL backend, as the driver knows it (no statement, so no ping)."""
    return connection.connection.info.backend_pid


def test_back_to_back_batches_share_a_connection_without_a_ping_and_an_idle_one_is_pinged(
    kept_connection, monkeypatch
):
    cfg = consumer_configs()["invoicing"]
    outcomes = [o.result for o in handle_batch(cfg, sqs_messages("KC-1"))]
    pid = backend_pid()
    outcomes += [o.result for o in handle_batch(cfg, sqs_messages("KC-2"))]
    outcomes += [o.result for o in handle_batch(cfg, sqs_messages("KC-3"))]

    assert outcomes == [HANDLED] * 30
    assert backend_pid() == pid  # one connection for all three
    assert kept_connection == []  # used a moment ago: no SELECT 1 before each batch

    # after the connection sat idle longer than the window, the next batch pings it first
    monkeypatch.setattr(db, "RECENTLY_SECONDS", 0.0)
    assert [o.result for o in handle_batch(cfg, sqs_messages("KC-4"))] == [HANDLED] * 10
    assert kept_connection == ["default"]
    assert BillableAgreement.objects.filter(created_seen=True).count() == 40


def test_a_connection_the_server_dropped_between_two_batches_is_found_before_the_next_batch(
    kept_connection, caplog
):
    cfg = consumer_configs()["invoicing"]
    assert {o.result for o in handle_batch(cfg, sqs_messages("KD-1"))} == {HANDLED}
    pid = backend_pid()
    terminate_backends({pid})  # its notice waits on the idle connection's socket

    with caplog.at_level(logging.WARNING, logger="events.consuming.batch"):
        outcomes = [o.result for o in handle_batch(cfg, sqs_messages("KD-2"))]

    # the ping found it dead, so the batch ran together, on a new connection
    assert kept_connection == ["default"]
    assert outcomes == [HANDLED] * 10
    assert "one at a time" not in caplog.text
    assert backend_pid() != pid
    projected = BillableAgreement.objects.filter(created_seen=True).values_list("agreement_id", flat=True)
    assert set(projected) == {f"KD-{b}-{i}" for b in (1, 2) for i in range(10)}


def test_a_connection_dropped_just_after_the_look_costs_the_batch_nothing_either(
    kept_connection, caplog, monkeypatch
):
    cfg = consumer_configs()["invoicing"]
    assert {o.result for o in handle_batch(cfg, sqs_messages("KR-1"))} == {HANDLED}
    pid = backend_pid()
    terminate_backends({pid})
    monkeypatch.setattr(db, "_has_news", lambda driver: False)  # as if it died after the look

    with caplog.at_level(logging.WARNING, logger="events.consuming.batch"):
        outcomes = [o.result for o in handle_batch(cfg, sqs_messages("KR-2"))]

    # the batch failed on the dead connection and was run again one message at a time on a new one
    assert kept_connection == []
    assert outcomes == [HANDLED] * 10
    assert "handling its messages one at a time" in caplog.text
    assert backend_pid() != pid
    projected = BillableAgreement.objects.filter(created_seen=True).values_list("agreement_id", flat=True)
    assert set(projected) == {f"KR-{b}-{i}" for b in (1, 2) for i in range(10)}
    # and the next batch runs together again on the new connection
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="events.consuming.batch"):
        assert {o.result for o in handle_batch(cfg, sqs_messages("KR-3"))} == {HANDLED}
    assert "one at a time" not in caplog.text


def test_a_poison_message_in_a_batch_on_a_connection_dropped_after_the_look_keeps_its_reason(
    kept_connection, monkeypatch
):
    cfg = consumer_configs()["invoicing"]
    assert {o.result for o in handle_batch(cfg, sqs_messages("KP-1"))} == {HANDLED}
    terminate_backends({backend_pid()})
    monkeypatch.setattr(db, "_has_news", lambda driver: False)  # as if it died after the look
    messages = sqs_messages("KP-2", 3)
    poison = messages[1]["Body"].replace('"EUR"', '"euro"')  # signed, but off its contract
    messages[1].update(Body=poison, MessageAttributes=signed_attributes(poison))

    outcomes = [o.result for o in handle_batch(cfg, messages)]

    # the poison message's reason is kept for dlq_inspect, its first statement on the dead connection
    assert outcomes == [HANDLED, POISON, HANDLED]
    [failure] = ConsumerFailure.objects.filter(consumer="invoicing")
    assert failure.message_id == messages[1]["MessageId"] and failure.poisoned
    assert "currency" in failure.last_error


def test_a_batch_of_one_at_a_time_events_on_a_connection_dropped_after_the_look_costs_no_retry(
    kept_connection,
):
    cfg = consumer_configs()["invoicing"]
    assert {o.result for o in handle_batch(cfg, sqs_messages("KO-1"))} == {HANDLED}
    pid = backend_pid()
    terminate_backends({pid})
    connection.health_check_done = True  # as when unit_of_work's look came just before the drop
    # the audit consumer's handler takes one event at a time and writes a row per event it applies
    messages = sqs_messages("KO-2", 3)

    outcomes = [o.result for o in process_batch(ConsumerRuntime("audit"), received(messages))]

    # the first one found the connection gone and ran again on a new one: none comes back later,
    # and each event's effect is there once
    assert outcomes == [HANDLED] * 3
    assert backend_pid() != pid
    assert not ConsumerFailure.objects.exists()
    assert sorted(AuditEntry.objects.values_list("aggregate_id", flat=True)) == [
        f"KO-2-{i}" for i in range(3)
    ]


def received(messages: list[dict[str, Any]]) -> list[Received]:
    return [Received(m["Body"], m["MessageId"], 1, m["MessageAttributes"]) for m in messages]


def test_a_handler_that_times_out_on_the_connection_that_replaced_a_dropped_one_runs_once(
    kept_connection, settings
):
    # given a kept connection the server dropped, which Django's health check will find and replace
    settings.CONSUMER_HANDLER_TIMEOUT_SECONDS = 0.3
    connection.ensure_connection()
    terminate_backends({backend_pid()})
    close_old_connections()  # as before a unit of work whose connection has news: ping it first
    key = f"dbsleep-2-{uuid.uuid4()}"  # the audit handler makes the database sleep 2 s
    body = json.dumps(envelope(key))

    # when its message is handled
    outcome = process_message("audit", body, message_id="m-slow", attributes=signed_attributes(body))

    # then its handler timed out once, on the new connection, and was not run again
    assert outcome.result == FAILED and "statement timeout" in outcome.reason
    assert audit_consumer.attempts[key] == 1
