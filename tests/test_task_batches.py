"""Many task messages at once (core/task_batches.py): what ``send_task`` would send, in fewer calls.

The batched messages are built once per batch rather than by ``send_task`` per message; a worker
must not be able to tell: the same headers, properties, routing and ``eta``, a task id of its
own per message. Real SQS endpoint over HTTP and a real Celery worker.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from celery import current_app
from celery._state import _task_stack

from core.task_batches import send_tasks
from events import topology
from events.models import Heartbeat
from events.tasks import heartbeat
from tests.factories import drain, queue_depth
from tests.helpers import wait_until

PER_MESSAGE = {"id", "root_id", "correlation_id", "delivery_tag", "eta", "kwargsrepr"}


def task_message(sqs_message: dict[str, Any]) -> dict[str, Any]:
    """A Celery task message as a worker reads it off SQS: the envelope, its body decoded."""
    envelope = json.loads(base64.b64decode(sqs_message["Body"]))
    envelope["body"] = json.loads(base64.b64decode(envelope["body"]))
    return envelope


def shared_part(message: dict[str, Any]) -> dict[str, Any]:
    """What two messages of one task name and countdown have in common when sent at once."""
    return {
        "headers": {k: v for k, v in message["headers"].items() if k not in PER_MESSAGE},
        "properties": {k: v for k, v in message["properties"].items() if k not in PER_MESSAGE},
        **{k: v for k, v in message.items() if k not in ("headers", "properties", "body")},
    }


def test_batched_task_messages_are_what_send_task_sends_each_with_its_own_task_id(empty_queues, sqs):
    # given twelve charges sent together with a countdown, and one sent by send_task as usual
    queue = topology.task_queue_name("payments")
    before = datetime.now().astimezone()
    send_tasks("payments.charge_payment", [{"payment_id": f"P-{i}"} for i in range(12)], countdown=30)
    current_app.send_task("payments.charge_payment", kwargs={"payment_id": "P-ref"}, countdown=30)

    # when a worker reads them off the payments queue
    messages = [task_message(m) for m in drain(sqs, queue)]

    # then each charge has one message of its own, with its own task id
    [reference] = [m for m in messages if m["body"][1] == {"payment_id": "P-ref"}]
    batched = [m for m in messages if m is not reference]
    assert sorted(m["body"][1]["payment_id"] for m in batched) == sorted(f"P-{i}" for i in range(12))
    ids = {m["headers"]["id"] for m in batched}
    assert len(ids) == 12 and reference["headers"]["id"] not in ids
    for m in batched:
        assert m["headers"]["root_id"] == m["properties"]["correlation_id"] == m["headers"]["id"]
        assert m["headers"]["kwargsrepr"] == repr(m["body"][1])
        assert m["headers"]["retries"] == 0
        # due 30 seconds after they were sent, as send_task's countdown says
        eta = datetime.fromisoformat(m["headers"]["eta"])
        assert before + timedelta(seconds=30) <= eta <= datetime.now().astimezone() + timedelta(seconds=30)
        # and otherwise exactly what send_task sends: task, routing, serializer, time limits, origin
        assert shared_part(m) == shared_part(reference)
        assert m["body"][0] == reference["body"][0] and m["body"][2] == reference["body"][2]
    assert len({m["properties"]["delivery_tag"] for m in messages}) == 13


@pytest.mark.slow
def test_a_worker_runs_each_batched_task_once_and_acknowledges_it(celery_worker, sqs):
    # given fifteen heartbeat tasks sent together (two SendMessageBatch calls), due in a second
    names = [f"batched-{i}" for i in range(15)]
    send_tasks("events.heartbeat", [{"name": n} for n in names], countdown=1)

    # when the worker takes them, then each ran once, as a task of its own
    wait_until(lambda: Heartbeat.objects.filter(name__in=names).count() == 15, timeout=60)
    task_ids = {h.detail["task_id"] for h in Heartbeat.objects.filter(name__in=names)}
    assert len(task_ids) == 15
    # and each was acknowledged: nothing is left on the queue to come back
    wait_until(lambda: queue_depth(sqs, topology.task_queue_name("events")) == 0, timeout=30)


def test_batched_from_inside_a_task_they_are_its_children_as_send_task_makes_them(empty_queues, sqs):
    # given a task at work (a pull consumer runs its handlers in one), as Celery's tracer sets it up
    task = heartbeat
    task.push_request(id="T-parent", root_id="T-root", delivery_info={}, called_directly=False)
    _task_stack.push(task)
    try:
        # when it sends three charges together, and one as send_task does
        send_tasks("payments.charge_payment", [{"payment_id": f"P-{i}"} for i in range(3)])
        current_app.send_task("payments.charge_payment", kwargs={"payment_id": "P-ref"})
        children = list(task.request.children)
    finally:
        _task_stack.pop()
        task.pop_request()

    # then each message names it as parent and its root as root, as send_task's does
    messages = [task_message(m) for m in drain(sqs, topology.task_queue_name("payments"))]
    assert len(messages) == 4
    for m in messages:
        assert (m["headers"]["parent_id"], m["headers"]["root_id"]) == ("T-parent", "T-root")
    # and the task knows its four children (their results, were results kept)
    assert {c.id for c in children} == {m["headers"]["id"] for m in messages}
