"""A relay task ends before its soft time limit, even on an endpoint that answers slowly: its last
pass starts calls only while the longest call could still end in time, and leaves the rest of its
rows due, unsent, for the relay task it kicks. (Stopped by the limit mid-pass, it would publish
those rows again and fail its task.)"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from django.core.checks import run_checks

from events.models import OutboxEvent
from events.publishing import kicker, sns
from events.publishing.relay import relay_exclusive
from events.topology import aws
from tests.factories import record_agreements_created

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_relay_on_a_slow_endpoint_ends_before_its_tasks_soft_time_limit(
    settings, monkeypatch, empty_queues, caplog
):
    # given a task soft limit of 8.5 s, passes started for 1 s, calls that may take 0.5 s (so a pass
    # may start calls for 8.5 - 1 - 0.5 - 5 = 2 s), no idle timeout, and an endpoint answering each
    # call in 0.4 s: a pass of 1,000 rows (100 calls on 4 threads) would take 10 s
    settings.CELERY_TASK_SOFT_TIME_LIMIT = 8.5
    settings.OUTBOX_RELAY_MAX_SECONDS = 1
    settings.OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS = 0
    settings.OUTBOX_RELAY_BATCH_SIZE, settings.OUTBOX_RELAY_LANES = 1000, 1
    settings.OUTBOX_RELAY_PUBLISH_CONCURRENCY = 4
    monkeypatch.setattr(aws, "longest_call_seconds", lambda: 0.5)
    record_agreements_created(1000, "slow")
    sent: list[str] = []
    publish_batch = sns.publish_batch

    def slow(topic: str, rows: list[Any], **kw: Any) -> dict[str, str]:
        time.sleep(0.4)
        sent.extend(str(r.id) for r in rows)
        return publish_batch(topic, rows, **kw)

    monkeypatch.setattr(sns, "publish_batch", slow)
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
    assert result is not None and 0 < result.published < 1000 and result.failed == 0
    assert result.not_sent == 1000 - result.published
    assert OutboxEvent.objects.filter(published_at__isnull=False).count() == result.published == len(sent)
    left = OutboxEvent.objects.filter(published_at__isnull=True)
    assert left.count() == result.not_sent
    assert not left.exclude(attempts=0).exists() and not left.exclude(last_error="").exists()
    assert kicked
    assert f"{result.not_sent} not sent: the pass ran out of its publishing time" in caplog.text


def test_settings_that_leave_a_relay_task_no_time_to_publish_are_warned_of(settings):
    # the defaults leave a relay task's last pass time to start its calls
    assert not [m for m in run_checks() if m.id == "billing.W013"]

    # a task soft limit of 30 s against a relay of 60 s and calls that may take 155 s does not
    settings.CELERY_TASK_SOFT_TIME_LIMIT = 30
    [warning] = [m for m in run_checks() if m.id == "billing.W013"]
    assert "CELERY_TASK_SOFT_TIME_LIMIT (30s)" in warning.msg and "OUTBOX_RELAY_MAX_SECONDS" in warning.msg
