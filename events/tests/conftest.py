"""Fixtures the events tests share."""

from __future__ import annotations

import pytest

from events.consuming.config import consumer_configs
from events.consuming.push import PushConsumer
from tests.auditapp import consumers as audit


@pytest.fixture
def audit_consumer(transactional_db, empty_queues):
    """The test app's audit consumer, polling its queue in this process (push mode)."""
    audit.attempts.clear()
    consumer = PushConsumer(consumer_configs()["audit"])
    consumer.start()
    yield consumer
    consumer.stop()
