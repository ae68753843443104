"""A relay task ends before its soft time limit, even on an endpoint that answers slowly: its last
pass starts calls only while the longest call could still end in time, and leaves the rest of its
rows due, unsent, for the relay task it kicks. (Stopped by the limit mid-pass, it would publish
those rows again and fail its task.)"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from django.core.checks import run_checks

from events import topology
from events.models import OutboxEvent
from events.publishing import holding, kicker, relay
from events.publishing.relay import relay_exclusive
from events.publishing.relay_pass import RelayResult, relay_once
from events.topology import aws
from tests.factories import record_agreements_created, slow_publishing

pytestmark = pytest.mark.django_db(transaction=True)


def slow_endpoint(settings: Any, monkeypatch: Any, *, soft_limit: float, rows: int) -> None:
    """A task soft limit, passes started for 1 s, calls that may take 0.5 s, no idle timeout; one
    lane of passes of up to ``rows`` rows (4 calls in flight), and that many rows due."""
    settings.CELERY_TASK_SOFT_TIME_LIMIT = soft_limit
    settings.OUTBOX_RELAY_MAX_SECONDS = 1
    settings.OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS = 0
    settings.OUTBOX_RELAY_BATCH_SIZE, settings.OUTBOX_RELAY_LANES = rows, 1
    settings.OUTBOX_RELAY_PUBLISH_CONCURRENCY = 4
    monkeypatch.setattr(aws, "longest_call_seconds", lambda: 0.5)
    record_agreements_created(rows, "slow")


def test_a_relay_on_a_slow_endpoint_ends_before_its_tasks_soft_time_limit(
    settings, monkeypatch, empty_queues, caplog
):
    # given a task soft limit of 11.5 s, passes started for 1 s, calls that may take 0.5 s (so a
    # pass may start calls for 11.5 - 1 - 0.5 - 5 = 5 s), no idle timeout, and an endpoint answering
    # each call in 0.4 s: a pass of 2,000 rows (200 calls on 4 threads) would take 20 s
    slow_endpoint(settings, monkeypatch, soft_limit=11.5, rows=2000)
    sent = slow_publishing(monkeypatch, each_call=0.4)
    kicked: list[bool] = []
    monkeypatch.setattr(kicker.kicker, "request", lambda *a, **kw: kicked.append(True))

    # when a relay runs as its task would
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="events.publishing.relay_pass"):
        result = relay_exclusive()
    took = time.monotonic() - started

    # then it ended before the limit, having marked every row it published; the rest are due as
    # they were (not failed, no attempt counted), said so, and a relay task is kicked for them
    assert took < settings.CELERY_TASK_SOFT_TIME_LIMIT, took
    assert result is not None and 0 < result.published < 2000 and result.failed == 0
    assert result.not_sent == 2000 - result.published
    assert OutboxEvent.objects.filter(published_at__isnull=False).count() == result.published == len(sent)
    left = OutboxEvent.objects.filter(published_at__isnull=True)
    assert left.count() == result.not_sent
    assert not left.exclude(attempts=0).exists() and not left.exclude(last_error="").exists()
    assert kicked
    assert f"{result.not_sent} not sent: the pass ran out of its publishing time" in caplog.text


def test_where_the_task_limit_leaves_no_time_a_relays_passes_are_not_cut_short(
    settings, monkeypatch, empty_queues
):
    # given a task soft limit (10 s) shorter than a relay's passes (60 s, as in the soak's
    # settings), so no bound could keep a relay in time, and an endpoint answering each call in
    # 0.3 s: 400 rows (40 calls on 4 threads) take 3 s
    slow_endpoint(settings, monkeypatch, soft_limit=10, rows=400)
    settings.OUTBOX_RELAY_MAX_SECONDS = 60
    sent = slow_publishing(monkeypatch, each_call=0.3)

    # when a relay runs
    result = relay_exclusive()

    # then its pass sends every row (not a second's worth, leaving the rest for pass after pass)
    assert result is not None and result.published == 400 and result.not_sent == 0
    assert len(sent) == 400


def test_a_relay_that_may_hold_starts_no_pass_after_its_deadline(settings, monkeypatch, empty_queues):
    # given a relay that may hold (0.1 s at most), one topic's queue deep, rows of every topic
    # coming all the time, and passes that take 0.5 s each
    settings.OUTBOX_RELAY_HOLD_DEPTH, settings.OUTBOX_RELAY_HOLD_MAX_SECONDS = 300, 0.1
    held = frozenset([topology.INVOICING])
    monkeypatch.setattr(holding, "held_producers", lambda *a, **kw: held)
    monkeypatch.setattr(holding, "deepest", lambda: (topology.event_queue_name("payments"), 500))
    monkeypatch.setattr(relay, "due_rows_exist", lambda **kw: True)
    started_at: list[float] = []
    told: list[float | None] = []  # the relay deadline each pass was given (its calls' bound)

    def a_pass(*, limit: int | None = None, relay_deadline: float | None = None, **kw: Any) -> RelayResult:
        started_at.append(time.monotonic())
        told.append(relay_deadline)
        time.sleep(0.5)
        return RelayResult(published=limit or 0, batches=1)

    monkeypatch.setattr(relay, "relay_once", a_pass)

    # when its passes run until a deadline 1.75 s away
    deadline = time.monotonic() + 1.75
    relay._passes(deadline, 10, None, threading.Event())

    # then four passes ran, the fourth the held topics' one as the hold ran out, and none started
    # after the deadline (the lane went back to the other topics' rows: a whole pass more)
    assert len(started_at) == 4 and max(started_at) <= deadline, [round(t - deadline, 2) for t in started_at]
    assert told == [deadline] * 4  # each pass, the held topics' too, keeps its calls to the relay's time


def test_a_pass_that_starts_late_keeps_to_its_relays_time(settings, monkeypatch, empty_queues):
    # given the slow endpoint's settings (a pass may start calls for 5 s), and a pass that starts
    # 3 s after its relay's deadline (depth reads that took long): 2 s of its relay's time is left
    slow_endpoint(settings, monkeypatch, soft_limit=11.5, rows=400)
    sent = slow_publishing(monkeypatch, each_call=0.4)

    # when it publishes its 400 rows (40 calls on 4 threads: 4 s)
    result = relay_once(relay_deadline=time.monotonic() - 3)

    # then it started calls for those 2 s at most (5 rounds of 4 calls of 10 rows; 6 if the claim
    # was quick), and left the rest due
    assert 0 < result.published <= 240 and result.not_sent == 400 - result.published == 400 - len(sent)


def test_settings_that_leave_a_relay_task_no_time_to_publish_are_warned_of(settings):
    # the defaults leave a relay task's last pass time to start its calls
    assert not [m for m in run_checks() if m.id == "billing.W013"]

    # a task soft limit of 30 s against a relay's 60 s of passes does not
    settings.CELERY_TASK_SOFT_TIME_LIMIT = 30
    [warning] = [m for m in run_checks() if m.id == "billing.W013"]
    assert "CELERY_TASK_SOFT_TIME_LIMIT (30s) does not bound a relay task" in warning.msg
    assert "OUTBOX_RELAY_MAX_SECONDS (60s), longer than that" in warning.msg
    # nor one that leaves a pass under 5 s after the longest call
    settings.CELERY_TASK_SOFT_TIME_LIMIT = 60 + aws.longest_call_seconds() + 5 + 4
    [warning] = [m for m in run_checks() if m.id == "billing.W013"]
    assert "last pass 4.0s to start calls in, under 5s" in warning.msg
