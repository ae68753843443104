"""A queue deleted under running workers (an account cleanup, an endpoint back without its queues):
workers and pollers stay up, back off, say so once a minute, and consume again once provisioned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from events import topology
from events.models import Heartbeat
from events.tasks import heartbeat
from tests.auditapp.models import AuditEntry
from tests.factories import AUDIT_QUEUE, envelope, send
from tests.helpers import ROOT, database_url, wait_until

TASK_QUEUE = "billing-test-celery-events"  # where events.heartbeat goes


def _lines_about(log: Path, logger: str, text: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if f" {logger} " in line and text in line]


@pytest.mark.slow
def test_workers_survive_a_deleted_queue_and_consume_again_once_provisioned(
    transactional_db, empty_queues, delete_queue, sqs, tmp_path
):
    # given a real worker process consuming every task queue and running the audit push consumer
    log = tmp_path / "worker.log"
    env = {**os.environ, "DATABASE_URL": database_url(), "EVENT_CONSUMERS_IN_WORKER": "audit"}
    cmd = [
        *(sys.executable, "-m", "celery", "-A", "billing_project", "worker", "--pool", "threads"),
        *("--concurrency", "2", "-Q", ",".join(topology.celery_queue_names()), "-l", "INFO"),
        *("-n", f"missing-{uuid.uuid4().hex[:6]}@%h"),
    ]
    with log.open("w") as out:
        worker = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        heartbeat.apply_async(kwargs={"name": "before-queue-deleted"})
        wait_until(lambda: Heartbeat.objects.filter(name="before-queue-deleted").exists(), timeout=60)
        # when its queues are deleted, and it polls them for a while (0.1 s polling interval)
        delete_queue(TASK_QUEUE)
        delete_queue(AUDIT_QUEUE)
        time.sleep(8)
        # then it is still running, and says what is wrong once per queue, with what to do
        assert worker.poll() is None, log.read_text()[-3000:]
        assert "Unrecoverable error" not in log.read_text()
        worker_lines = _lines_about(log, "billing_project.kombu_fixes", f"Celery queue {TASK_QUEUE}: ")
        assert len(worker_lines) == 1, worker_lines
        assert "QueueDoesNotExist" in worker_lines[0] and "run messaging_provision" in worker_lines[0]
        poller_lines = _lines_about(log, "events.consuming.push", "consumer audit: SQS call failed")
        assert len(poller_lines) == 1, poller_lines
        # and once messaging_provision recreates them, both consume again
        delete_queue.restore()
        heartbeat.apply_async(kwargs={"name": "after-queue-recreated"})
        send(sqs, [json.dumps(envelope("after-recreate"))])
        wait_until(lambda: Heartbeat.objects.filter(name="after-queue-recreated").exists(), timeout=60)
        wait_until(lambda: AuditEntry.objects.filter(aggregate_id="after-recreate").exists(), timeout=60)
        assert _lines_about(log, "billing_project.kombu_fixes", "answers again")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)


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
    from events.topology import aws

    connection = AsyncSQSConnection(aws.client("sqs"), http_client=object())
    raw = Response(
        Request("http://sqs/"), status, {"Content-Type": "application/x-amz-json-1.0"}, BytesIO(body)
    )
    answer = connection._on_list_ready(None, [], "ReceiveMessage", AsyncHTTPResponse(raw))
    assert isinstance(answer, ReceiveFailed) and str(answer).startswith(expected)
