"""Ctrl-C on `make run` while a Celery worker is busy: the supervisor's warm shutdown lets the
task at hand finish, with no WorkerLostError traceback; a task still running after the grace
period is left on its queue for redelivery (tasks acknowledge late)."""

from __future__ import annotations

import io
import os
import threading
import time
import uuid

import psutil
import pytest

from devsupport.stack import CELERY, CELERY_QUIET
from devsupport.supervisor import Child, stop_all
from events.models import Heartbeat
from events.topology import aws
from tests.auditapp.tasks import busy
from tests.helpers import ROOT, database_url, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

QUEUE = "billing-test-celery-default"  # where auditapp.busy goes


class Output(io.StringIO):
    """What make run would print for the worker."""


def busy_worker(out: Output) -> Child:
    """A prefork worker as make run starts one, on the default queue, once it is ready."""
    ready = threading.Event()
    worker = Child(
        "worker",
        [
            *(*CELERY, *CELERY_QUIET, "worker", "-l", "INFO", "-Q", "default"),
            *("--concurrency", "1", "-n", f"stop-{uuid.uuid4().hex[:6]}@%h"),
        ],
        {**os.environ, "DATABASE_URL": database_url()},
        cwd=ROOT,
        celery_worker=True,
        on_line=lambda line: ready.set() if " ready." in line else None,
        out=out,
    )
    wait_until(ready.is_set, timeout=60)
    return worker


def in_flight(sqs) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=aws.queue_url(QUEUE), AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_the_task_at_hand_finishes_and_no_traceback_is_printed(empty_queues, capsys):
    # given a prefork worker busy on a 4-second task
    out = Output()
    worker = busy_worker(out)
    group = [worker.proc.pid, *(p.pid for p in psutil.Process(worker.proc.pid).children(recursive=True))]
    busy.apply_async(kwargs={"name": "warm", "seconds": 4})
    wait_until(lambda: Heartbeat.objects.filter(name="warm-started").exists(), timeout=60)

    # when make run stops it (Ctrl-C)
    started = time.monotonic()
    stop_all([[worker]], grace=30)

    # then the task finished first, the worker said "warm shutdown", and nothing else went wrong
    assert Heartbeat.objects.filter(name="warm-done").exists()
    assert time.monotonic() - started < 20
    printed = out.getvalue()
    assert "Warm shutdown" in printed
    assert "Traceback" not in printed and "WorkerLostError" not in printed, printed
    assert "stopped worker" in capsys.readouterr().out
    assert not [p for p in group if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]


def test_past_the_grace_period_the_task_is_left_for_redelivery(empty_queues, sqs, capsys):
    # given a worker busy on a task longer than the grace period
    out = Output()
    worker = busy_worker(out)
    busy.apply_async(kwargs={"name": "long", "seconds": 60})
    wait_until(lambda: Heartbeat.objects.filter(name="long-started").exists(), timeout=60)

    # when make run stops it with 1 second of grace
    stop_all([[worker]], grace=1)

    # then it was killed, said so, printed no traceback ...
    assert not worker.alive()
    assert "worker: still running after 1s: killing it; its unfinished tasks go back to their queue" in (
        capsys.readouterr().out
    )
    assert "Traceback" not in out.getvalue() and "WorkerLostError" not in out.getvalue()
    # ... and the task's message was not acknowledged: SQS delivers it again after its visibility timeout
    assert not Heartbeat.objects.filter(name="long-done").exists()
    assert in_flight(sqs) == 1
    sqs.purge_queue(QueueUrl=aws.queue_url(QUEUE))  # not for a later test's worker
    wait_until(lambda: in_flight(sqs) == 0, timeout=10)
