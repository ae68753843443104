"""Fixtures shared by every app's tests: the SQS/SNS endpoint, queues, real workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from celery.contrib.testing.worker import start_worker
from django.core.management import call_command

from billing_project.celery import app as celery_app
from events import aws, provisioning, topology
from scripts.devstack import free_port


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
def delete_queue(provisioned: topology.Topology, sqs: Any) -> Iterator[Callable[[str], None]]:
    """Delete queues by full name during a test (an operator's mistake, an account cleanup);
    messaging_provision brings them back afterwards for the tests that follow."""
    deleted: list[str] = []

    def delete(name: str) -> None:
        sqs.delete_queue(QueueUrl=aws.queue_url(name))
        deleted.append(name)

    yield delete
    if deleted:
        provisioning.provision(topology.build())


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


@pytest.fixture
def smtp(settings: Any) -> Iterator[Any]:
    """A real SMTP server on loopback; Django mails alerts to it."""

    class Inbox:
        def __init__(self) -> None:
            self.messages: list = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd API
            self.messages.append(envelope)
            return "250 OK"

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    settings.ALERT_EMAILS = ["ops@example.com"]
    yield inbox
    controller.stop()
