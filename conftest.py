"""Fixtures shared by every app's tests: the SQS/SNS endpoint, queues, real workers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.core.management import call_command

from billing_project.celery import app as celery_app
from events import aws, topology


@pytest.fixture(scope="session")
def provisioned(django_db_setup: Any) -> topology.Topology:
    """Every topic, queue, DLQ and subscription, created once per test session."""
    call_command("messaging_provision", verbosity=0)
    return topology.build()


@pytest.fixture
def sqs() -> Any:
    return aws.client("sqs")


@pytest.fixture
def sns() -> Any:
    return aws.client("sns")


@pytest.fixture
def empty_queues(provisioned: topology.Topology, sqs: Any) -> topology.Topology:
    """Purge every queue and DLQ so a test starts from nothing."""
    for q in provisioned.queues:
        for name in (q.name, q.dlq_name):
            sqs.purge_queue(QueueUrl=aws.queue_url(name))
    return provisioned


@pytest.fixture
def celery_worker(transactional_db: Any, empty_queues: topology.Topology) -> Iterator[Any]:
    """A real Celery worker (threads pool) consuming the real SQS task queues."""
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        shutdown_timeout=30,
        queues=topology.celery_queue_names(),
    ) as worker:
        yield worker
