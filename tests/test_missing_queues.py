"""A queue deleted under running workers (an account cleanup, an endpoint back without its queues):
workers and pollers stay up, back off, say so once a minute, and consume again once provisioned."""

from __future__ import annotations

import json
import logging
import time

import pytest

from events import provisioning, topology
from events.models import Heartbeat
from events.pollers import PushConsumer, consumer_configs
from events.tasks import heartbeat
from events.tests.test_consumers import AUDIT_QUEUE, envelope, send
from tests.auditapp.models import AuditEntry
from tests.helpers import wait_until

TASK_QUEUE = "billing-test-celery-events"  # where events.heartbeat goes


def _warnings_about(caplog: pytest.LogCaptureFixture, logger: str, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == logger and r.levelno >= logging.WARNING and text in r.getMessage()
    ]


@pytest.mark.slow
def test_workers_survive_a_deleted_queue_and_consume_again_once_provisioned(
    celery_worker, delete_queue, sqs, caplog
):
    caplog.set_level(logging.INFO)
    consumer = PushConsumer(consumer_configs()["audit"])
    consumer.start()
    try:
        # given a running Celery worker and push consumer, whose queues are then deleted
        delete_queue(TASK_QUEUE)
        delete_queue(AUDIT_QUEUE)
        # when they poll the missing queues for a while (many polls: 0.1 s polling interval)
        time.sleep(8)
        # then the worker is still running, and each failure is logged once, with what to do
        assert celery_worker.blueprint.state == 1  # RUN: no "Unrecoverable error"
        assert consumer.thread.is_alive()
        worker_lines = _warnings_about(caplog, "billing_project.kombu_fixes", TASK_QUEUE)
        assert len(worker_lines) == 1, worker_lines
        assert "QueueDoesNotExist" in worker_lines[0] and "run messaging_provision" in worker_lines[0]
        poller_lines = _warnings_about(caplog, "events.pollers", "consumer audit")
        assert len(poller_lines) == 1, poller_lines
        assert not [r for r in caplog.records if r.levelno >= logging.CRITICAL]
        # and once messaging_provision recreates them, both consume again
        provisioning.provision(topology.build())
        heartbeat.apply_async(kwargs={"name": "after-queue-recreated"})
        send(sqs, [json.dumps(envelope("after-recreate"))])
        wait_until(lambda: Heartbeat.objects.filter(name="after-queue-recreated").exists(), timeout=60)
        wait_until(lambda: AuditEntry.objects.filter(aggregate_id="after-recreate").exists(), timeout=60)
        assert any(
            "answers again" in line
            for line in _warnings_about(caplog, "billing_project.kombu_fixes", TASK_QUEUE)
        )
    finally:
        consumer.stop()


@pytest.mark.parametrize(
    "status, body, expected",
    [
        (
            403,
            b'{"__type": "com.amazon.coral.service#AccessDeniedException", "message": "not authorized"}',
            "HTTP 403 AccessDeniedException: not authorized (check the worker's IAM permissions",
        ),
        (
            403,
            b'{"__type": "com.amazon.coral.service#ExpiredTokenException", "message": "token expired"}',
            "HTTP 403 ExpiredTokenException: token expired (the worker's AWS credentials expired",
        ),
        (400, b"<html>proxy says no</html>", "HTTP 400"),
    ],
)
def test_a_refused_receive_is_an_answer_with_its_reason_not_an_exception(status, body, expected):
    """What kombu's async poller gets for AccessDenied, ExpiredToken or an odd 4xx: no exception
    (which would be the worker's "Unrecoverable error"), but a reason for the once-a-minute log."""
    from io import BytesIO

    from kombu.asynchronous.aws.connection import AsyncHTTPResponse
    from kombu.asynchronous.aws.sqs.connection import AsyncSQSConnection
    from kombu.asynchronous.http import Request, Response

    from billing_project.kombu_fixes import ReceiveFailed
    from events import aws

    connection = AsyncSQSConnection(aws.client("sqs"), http_client=object())
    raw = Response(
        Request("http://sqs/"), status, {"Content-Type": "application/x-amz-json-1.0"}, BytesIO(body)
    )
    answer = connection._on_list_ready(None, [], "ReceiveMessage", AsyncHTTPResponse(raw))
    assert isinstance(answer, ReceiveFailed) and str(answer).startswith(expected)
