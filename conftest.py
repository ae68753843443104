"""Fixtures shared by every app's tests: the SQS/SNS endpoint, queues, real workers."""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.core.management import call_command
from kombu.asynchronous import set_event_loop

from billing_project.celery import app as celery_app
from devsupport.net import free_port
from events import topology
from events.publishing.kicker import kicker as relay_kicker
from events.topology import aws, provisioning
from payments.dispatch import charge_kicker


@pytest.fixture(scope="session")
def provisioned(django_db_setup: Any) -> topology.Topology:
    """Every topic, queue, DLQ and subscription, created once per test session."""
    call_command("messaging_provision", verbosity=0)
    return topology.build()


@pytest.fixture(scope="session", autouse=True)
def kickers_idle_at_the_end(django_db_setup: Any) -> Iterator[None]:
    """The kickers' threads (the relay's, payments' dispatch) keep their database connection for a
    moment after a kick: let them go idle before the test database is dropped."""
    yield
    for k in (relay_kicker, charge_kicker):
        k.wait_idle()


@pytest.fixture
def sqs() -> Any:
    return aws.client("sqs")


@pytest.fixture
def sns() -> Any:
    return aws.client("sns")


@pytest.fixture
def empty_queues(provisioned: topology.Topology, sqs: Any) -> topology.Topology:
    """Purge every queue and DLQ so a test starts from nothing (after the kicks of an earlier
    test's commits, which a kicker thread may send up to an interval later)."""
    for k in (relay_kicker, charge_kicker):
        k.wait_idle()
    _after_the_last_workers_polls()
    for q in provisioned.queues:
        for name in (q.name, q.dlq_name):
            sqs.purge_queue(QueueUrl=aws.queue_url(name))
    return provisioned


_worker_stopped_at = [0.0]  # monotonic; when the last celery_worker of this session stopped


def _after_the_last_workers_polls() -> None:
    """A worker that just stopped may still have a long poll open at the endpoint (up to the broker's
    wait_time_seconds): a message sent meanwhile is handed to it, and is gone from the queue for the
    whole visibility timeout. Seen as a charge missing from a queue the test drained, and as a new
    worker's first task waiting 30 s. Wait until such a poll has ended."""
    wait = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("wait_time_seconds", 0)
    remaining = _worker_stopped_at[0] + wait + 0.5 - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


class QueueDeleter:
    """Deletes queues by full name (an operator's mistake, an account cleanup) and restores them."""

    def __init__(self, sqs: Any) -> None:
        self.sqs = sqs
        self.deleted: list[str] = []

    def __call__(self, name: str) -> None:
        self.sqs.delete_queue(QueueUrl=aws.queue_url(name))
        self.deleted.append(name)

    def restore(self) -> None:
        """messaging_provision, as the operator would run it; without e-mail subscriptions (the
        smtp fixture sets ALERT_EMAILS), which would change the topology later tests read back."""
        provisioning.provision(dataclasses.replace(topology.build(), email_subscriptions=()))


@pytest.fixture
def delete_queue(provisioned: topology.Topology, sqs: Any) -> Iterator[QueueDeleter]:
    """Delete queues during a test; they are back afterwards for the tests that follow."""
    deleter = QueueDeleter(sqs)
    yield deleter
    if deleter.deleted:
        deleter.restore()


@pytest.fixture
def celery_worker(transactional_db: Any, empty_queues: topology.Topology) -> Iterator[Any]:
    """A real Celery worker (threads pool) consuming the real SQS task queues.

    Ready only once it has run a probe task: in the first seconds after a worker starts in a process
    where another one ran, kombu's SQS consumer can take a message and drop it (it then stays
    invisible for the whole visibility timeout), so probes are sent until one comes back.
    """
    set_event_loop(None)
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        shutdown_timeout=30,
        queues=topology.celery_queue_names(),
    ) as worker:
        _wait_until_consuming()
        yield worker
    _worker_stopped_at[0] = time.monotonic()
    set_event_loop(None)


def _wait_until_consuming(timeout: float = 30.0) -> None:
    import time
    import uuid

    from events.models import Heartbeat
    from events.tasks import heartbeat

    name = f"test-probe-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        heartbeat.apply_async(kwargs={"name": name})
        for _ in range(10):
            if Heartbeat.objects.filter(name=name).exists():
                Heartbeat.objects.filter(name=name).delete()
                return
            time.sleep(0.1)
    raise RuntimeError(f"the test worker did not run a probe task within {timeout:.0f}s")


@pytest.fixture
def sandbox(settings: Any) -> Iterator[Any]:
    """The shipped sandbox gateway on a free loopback port; the project's gateway points at it."""
    from devsupport.sandbox_gateway import SandboxConfig, start_in_thread
    from payments.gateway import reset_gateway

    server = start_in_thread(SandboxConfig(seed=1))
    settings.PAYMENT_GATEWAY_URL = server.url
    reset_gateway()
    yield server
    server.shutdown()
    reset_gateway()


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


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """Python's own SIGINT handler, as in a terminal, for tests that send themselves a Ctrl-C: a run
    started in the background (nohup, ``cmd &`` in a script) ignores SIGINT."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
