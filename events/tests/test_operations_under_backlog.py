"""Operations never wait behind bulk traffic: with 100,000 unpublished events (what a daily run over
100,000 agreements leaves), messaging_status, /readyz and the Messaging page show correct-enough
figures from bounded reads; an alert goes out on the relay's first pass; monitoring has a queue of
its own. (How fast: bench/ops_under_backlog.py.)"""

from __future__ import annotations

import json
import re
import time

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from billing_project.celery import app as celery_app
from devsupport.backlog import outbox_backlog_insert
from events import contracts, topology
from events.models import Heartbeat, OutboxEvent
from events.operations import observations
from events.operations.chart import chart_refresh
from events.publishing import NewEvent, record_events
from events.publishing.relay_pass import relay_once
from events.tasks import monitor
from events.topology import aws
from tests.factories import invoice_data, record_agreements_created, record_an_alert

pytestmark = pytest.mark.django_db  # the backlog is rolled back with the test


@pytest.fixture
def backlog_100k() -> None:
    outbox_backlog_insert(100_000)  # invoice.issued, up to an hour old


@pytest.fixture
def alerts_queue_emptied(empty_queues, sqs):
    """Alerts these tests publish are purged afterwards, so no later test mails them."""
    yield
    sqs.purge_queue(QueueUrl=aws.queue_url(topology.event_queue_name("alerts_mail")))


def _status() -> str:
    from io import StringIO

    out = StringIO()
    with pytest.raises(CommandError) as exc:  # the backlog is an hour old: outbox_lagging
        call_command("messaging_status", "--no-age", stdout=out)
    assert exc.value.returncode == 2
    return out.getvalue()


def test_messaging_status_says_more_than_the_bound_and_the_true_oldest_age(
    backlog_100k, provisioned, settings
):
    # given 100,000 unpublished events, 7 of which failed a first try
    OutboxEvent.objects.filter(
        pk__in=OutboxEvent.objects.filter(published_at__isnull=True).values("pk")[:7]
    ).update(attempts=1)
    # when the count stops at its bound (10,000 by default)
    out = _status()
    # then it says "more than", the failing ones exactly, and the oldest row's real age (an hour)
    assert "outbox: more than 10,000 unpublished (7 failing), oldest unpublished 60m" in out
    lagging = re.search(
        r"BREACH: outbox_lagging: more than 10,000 unpublished event\(s\), oldest (\d+)s", out
    )
    assert lagging and 3590 <= int(lagging.group(1)) <= 3700
    # and with the planner's statistics (ANALYZE, as autovacuum does after such an insert) the estimate
    with connection.cursor() as cur:
        cur.execute("ANALYZE events_outboxevent")
    assert re.search(r"outbox: more than 10,000 \(about (9\d,\d{3}|10\d,\d{3})\) unpublished", _status())
    # and below the bound the count is exact
    settings.OUTBOX_COUNT_LIMIT = 200_000
    assert "outbox: 100000 unpublished (7 failing)" in _status()


def test_readyz_and_the_messaging_page_answer_behind_the_backlog(backlog_100k, provisioned, client):
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "sqs": "ok", "sns": "ok"}
    client.force_login(User.objects.create_user("ops", is_staff=True))
    page = client.get("/admin/messaging/").content.decode()
    # "(about N)" follows once the planner has statistics (an earlier ANALYZE is not rolled back)
    shown = r"more than 10,000( \(about [\d,]+\))?"
    assert re.search(rf'<p id="outbox">{shown} unpublished \(0 failing\); oldest unpublished 60m', page)
    assert re.search(rf"outbox_lagging: <strong>BREACHED</strong> — {shown} unpublished event\(s\)", page)
    assert "Not counted yet" in page  # the chart is counted by beat, never by the page


def test_the_chart_is_counted_off_the_page_and_shown_from_what_was_counted(provisioned, client):
    # given 3 events published today (a history the page must not count itself)
    outbox_backlog_insert(3, published=True, spread_seconds=1)
    # when beat's chart task counts
    chart_refresh()
    # then the page shows those counts and when they were taken
    client.force_login(User.objects.create_user("ops", is_staff=True))
    page = client.get("/admin/messaging/").content.decode()
    assert "Counted " in page
    data = json.loads(re.search(r'id="messaging-chart-data" type="application/json">(.*?)</script>', page)[1])
    published = next(s for s in data["series"] if s["key"] == "published")
    assert published["values"][-1] == 3 and published["total"] == 3


def test_an_alert_recorded_behind_10000_bulk_events_is_claimed_by_the_first_relay_pass(
    alerts_queue_emptied, settings
):
    # given 10,000 bulk events waiting (older than the alert), then an alert
    outbox_backlog_insert(10_000)
    record_an_alert()
    # when the relay makes one pass of a single row
    result = relay_once(limit=1)
    # then that row was the alert, and every bulk event still waits
    assert result.published == 1
    published = OutboxEvent.objects.filter(published_at__isnull=False)
    assert [e.type for e in published] == ["alert.refund_failed"]
    assert OutboxEvent.objects.filter(published_at__isnull=True, type="invoice.issued").count() == 10_000


def test_an_event_of_another_topic_behind_10000_bulk_events_goes_out_within_a_pass_per_topic(
    alerts_queue_emptied, settings
):
    # given 10,000 agreement.created waiting (the topic a claim would take first), then one
    # invoice.issued
    record_agreements_created(10_000, "EARLY")
    with transaction.atomic():
        late = NewEvent(contracts.INVOICE_ISSUED, "LATE", 1, invoice_data(invoice_id="LATE"))
        record_events(sender=None, events=[late])
    # when the relay makes one pass of a single row per topic
    for _ in topology.TOPICS:
        relay_once(limit=1)
    # then the invoice event went out in one of them, not behind the agreements topic's backlog
    assert OutboxEvent.objects.get(aggregate_id="LATE").published_at is not None
    waiting = OutboxEvent.objects.filter(published_at__isnull=True, aggregate_id__startswith="EARLY")
    assert waiting.count() >= 10_000 - len(topology.TOPICS) + 1


def test_monitoring_publishes_its_alert_itself_and_leaves_the_bulk_to_the_relay(
    alerts_queue_emptied, settings
):
    # given 10,000 bulk events waiting for an hour: the outbox is lagging
    outbox_backlog_insert(10_000)
    # when the monitoring task runs (as beat sends it, to the monitoring queue's worker)
    sent = monitor()
    # then its alert is published at once, and not one bulk event by it
    assert "alert.outbox_lagging" in sent
    alert = OutboxEvent.objects.get(type="alert.outbox_lagging")
    assert alert.published_at is not None
    assert not OutboxEvent.objects.filter(type="invoice.issued", published_at__isnull=False).exists()


def test_monitoring_tasks_have_their_own_queue_provisioned_with_a_dlq(provisioned, sqs):
    route = celery_app.amqp.router.route
    assert route({}, "events.monitor")["queue"].name == "monitoring"
    assert route({}, "events.messaging_chart")["queue"].name == "monitoring"
    assert route({}, "events.relay_outbox")["queue"].name == "events"  # bulk stays on its own
    spec = next(q for q in provisioned.queues if q.name == "billing-test-celery-monitoring")
    attrs = sqs.get_queue_attributes(QueueUrl=aws.queue_url(spec.name), AttributeNames=["RedrivePolicy"])
    assert spec.dlq_name == "billing-test-celery-monitoring-dlq"
    assert spec.dlq_name in attrs["Attributes"]["RedrivePolicy"]


def test_a_backlog_of_old_messages_is_observed_every_few_seconds_not_at_every_receive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given the pollers of a consumer restarted after an outage, receiving messages 10 minutes old
    queue = "billing-test-observed-events"
    monkeypatch.setattr(observations, "_observed", {})
    monkeypatch.setattr(observations, "_oldest_since", {})
    written: list[float] = []
    real = Heartbeat.objects.update_or_create

    def counted(**kwargs):
        written.append(kwargs["defaults"]["detail"]["oldest_age"])
        return real(**kwargs)

    monkeypatch.setattr(Heartbeat.objects, "update_or_create", counted)
    sent_ms = int((time.time() - 600) * 1000)

    # when they take 300 receives of a backlog within a second, one of them the oldest (15 minutes)
    for i in range(300):
        age_ms = sent_ms - (300_000 if i == 150 else 0)
        observations.observe_receive(queue, [{"Attributes": {"SentTimestamp": str(age_ms)}}] * 10)

    # then the queue's observation was written once, not at each receive
    assert len(written) == 1 and 599 < written[0] < 620
    # and the next one, a few seconds on, carries the oldest age received meanwhile
    monkeypatch.setattr(observations, "_observed", {queue: time.time() - observations.OBSERVE_EVERY_SECONDS})
    observations.observe_receive(queue, [])
    assert len(written) == 2 and 899 < written[1] < 920
    beat = Heartbeat.objects.get(name=f"queue:{queue}")
    assert 899 < beat.detail["oldest_age"] < 920
