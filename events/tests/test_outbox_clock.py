"""Whether an outbox row is due is judged by the database's clock, whatever the clocks of the hosts
that record, relay and retry it say: a web host running ahead, a relay running behind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from events import envelope
from events.models import OutboxEvent
from events.publishing.relay import relay_exclusive
from tests.factories import record_agreements_created

pytestmark = pytest.mark.django_db(transaction=True)

_real_now = timezone.now


@contextmanager
def clock_off_by(monkeypatch: Any, offset: timedelta) -> Iterator[None]:
    """This process's clock (what ``timezone.now`` tells) ``offset`` off the real time."""
    with monkeypatch.context() as m:
        m.setattr(timezone, "now", lambda: _real_now() + offset)
        yield


def database_now() -> datetime:
    with connection.cursor() as cur:
        cur.execute("SELECT statement_timestamp()")
        return cur.fetchone()[0]


def test_events_recorded_on_a_host_whose_clock_runs_ahead_are_published_by_the_next_pass(
    monkeypatch, empty_queues
):
    # given a web host whose clock runs two minutes ahead records three events
    with clock_off_by(monkeypatch, timedelta(minutes=2)):
        record_agreements_created(3, "ahead")

    # when a relay on a host with the right time passes (the one the commit kicks)
    result = relay_exclusive()

    # then it publishes them now, not two minutes later
    assert result is not None and result.published == 3
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


def test_a_relay_whose_clock_runs_behind_takes_what_is_due(monkeypatch, empty_queues):
    record_agreements_created(2, "due")
    with clock_off_by(monkeypatch, timedelta(minutes=-10)):
        result = relay_exclusive()
    assert result is not None and result.published == 2


def test_a_failed_rows_backoff_counts_from_the_databases_clock_not_the_relays(monkeypatch, empty_queues):
    # given a relay on a host whose clock runs an hour behind, and a row it cannot send
    record_agreements_created(1, "refused")
    serialize = envelope.serialize

    def refusing(values: dict[str, Any]) -> str:
        raise TypeError("Integer exceeds 64-bit range")

    with clock_off_by(monkeypatch, timedelta(hours=-1)), monkeypatch.context() as m:
        m.setattr(envelope, "serialize", refusing)
        failed = relay_exclusive()
    assert failed is not None and failed.failed == 1

    # then the row waits its backoff from now (the database's now), so the next pass does not
    # try it again at once (with the relay's clock it would be an hour overdue: retried at once,
    # every pass, as fast as passes come)
    row = OutboxEvent.objects.get()
    assert row.attempts == 1 and row.next_attempt_at > database_now()
    monkeypatch.setattr(envelope, "serialize", serialize)
    again = relay_exclusive()
    assert again is None or (again.published, again.failed) == (0, 0)
    assert OutboxEvent.objects.get().attempts == 1
