"""Clients across a fork (a Celery pool's child, started or replaced after its worker made clients):
the child makes its own, even if a thread of the parent held the clients' lock at that moment, and
both processes' clients answer; a worker parses the service models before it forks, so a child's
first clients read no model file. The relay's publishing threads likewise: a child publishes on
threads of its own, not on the parent's, which are not in it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import botocore.loaders
import pytest
from celery.signals import worker_init
from django.utils import timezone

from billing_project import celery as celery_app
from events import contracts, topology
from events.publishing import sns
from events.publishing.outbox import NewEvent, build_row
from events.topology import aws
from tests.factories import agreement_data, drain
from tests.forks import held_by_a_thread, in_child


def test_a_forked_process_makes_its_own_clients_and_both_answer():
    # given a parent whose SQS client has a live connection to the endpoint
    parent = aws.client("sqs")
    parent.list_queues()

    def child() -> dict[str, Any]:
        sqs = aws.client("sqs")
        return {"same": sqs is parent, "answered": "ResponseMetadata" in sqs.list_queues()}

    # when a process forked from it asks for an SQS client
    got = in_child(child)
    # then it gets one of its own (not the parent's, whose sockets it would share), which answers
    assert got == {"same": False, "answered": True}
    # and the parent's own client still answers, and is still the parent's
    assert aws.client("sqs") is parent
    assert "ResponseMetadata" in parent.list_queues()


def test_a_child_forked_while_a_parent_thread_makes_a_client_is_not_stuck():
    # given a thread of the parent in the middle of making a client (holding the clients' lock)
    aws.reset_clients()
    with held_by_a_thread(aws._clients["sts"]._lock):
        # when the process forks then and the child asks for a client
        got = in_child(lambda: {"answered": "ResponseMetadata" in aws.client("sts").get_caller_identity()})
    # then the child gets one (that thread is not in the child to release the lock it held)
    assert got == {"answered": True}


@pytest.fixture
def cold_models(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A process whose service models are not parsed yet; every botocore file looked for from now
    on (read, or probed and not there)."""
    monkeypatch.setattr(aws, "_loader", botocore.loaders.create_loader())
    aws.reset_clients()
    read: list[str] = []
    real = botocore.loaders.JSONFileLoader.load_file

    def load_file(self: Any, path: str) -> Any:
        read.append(path)
        return real(self, path)

    monkeypatch.setattr(botocore.loaders.JSONFileLoader, "load_file", load_file)
    yield read
    aws.reset_clients()


def test_a_worker_parses_the_models_before_forking_and_its_children_read_none(cold_models: list[str]):
    # when a Celery worker starts (worker_init: in its main process, before the pool forks)
    assert celery_app.warm_aws_models in [receiver for _, receiver in worker_init.receivers]
    celery_app.warm_aws_models(sender=None)
    assert cold_models, "the worker read the models"
    before = len(cold_models)

    # then a child making every client the project uses looks for no botocore file, and they answer
    def child() -> dict[str, Any]:
        clients = {service: aws.client(service) for service in aws.SERVICES}
        answered = "Account" in clients["sts"].get_caller_identity()
        return {"read": cold_models[before:], "answered": answered}

    assert in_child(child) == {"read": [], "answered": True}


def test_without_the_models_parsed_a_child_reads_them_itself(cold_models: list[str]):
    # the control: the same child, in a worker that did not parse them first, reads each model file
    def child() -> dict[str, Any]:
        for service in aws.SERVICES:
            aws.client(service)
        return {"read": len(cold_models)}

    assert in_child(child)["read"] >= len(aws.SERVICES)


def test_a_forked_process_publishes_on_threads_of_its_own(empty_queues: Any, sqs: Any):
    def chunks(prefix: str) -> list[tuple[str, list[Any]]]:  # two PublishBatch calls: the thread pool
        rows = [
            build_row(
                NewEvent(contracts.AGREEMENT_CREATED, f"{prefix}-{i}", 1, agreement_data()), timezone.now()
            )
            for i in range(4)
        ]
        return [
            (topology.topic_name(topology.AGREEMENTS), rows[:2]),
            (topology.topic_name(topology.AGREEMENTS), rows[2:]),
        ]

    # given a parent that published on its relay threads
    assert sns.publish_all(chunks("PARENT")) == {}
    # when a process forked from it publishes in its turn
    got = in_child(lambda: {"failed": sns.publish_all(chunks("CHILD"))}, timeout=20)
    # then its events went out (on threads of its own: the parent's are not in the child), and the
    # parent's threads still publish
    assert got == {"failed": {}}
    assert sns.publish_all(chunks("AGAIN")) == {}
    bodies = [m["Body"] for m in drain(sqs, topology.event_queue_name("invoicing"))]
    assert {p: sum(f'"{p}-' in b for b in bodies) for p in ("PARENT", "CHILD", "AGAIN")} == {
        "PARENT": 4,
        "CHILD": 4,
        "AGAIN": 4,
    }
