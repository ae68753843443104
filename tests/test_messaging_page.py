"""The Messaging admin page: what operators see, who may redrive and replay (permission matrix), and
what needs an operator highlighted with its repair next to it (a DLQ holding messages, a breached
check, an outbox backlog, a stale daily run), and nothing highlighted when all is well."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone

from core.calendar import billing_today
from devsupport.backlog import outbox_backlog_insert
from events import contracts
from events.models import Heartbeat, OutboxEvent
from events.operations.health import heartbeat_record
from events.publishing import NewEvent, record_events
from events.publishing.relay import relay_pending
from events.topology import aws
from invoicing.models import DailyRun
from tests.factories import DeletesRefused, OddSendAnswer, agreement_data, drain
from tests.pages import MESSAGING_URL as URL
from tests.pages import element, messaging_page, staff

pytestmark = pytest.mark.django_db(transaction=True)
DLQ = "billing-test-payments-events-dlq"


@pytest.fixture
def poisoned(empty_queues, sqs):
    sqs.send_message(QueueUrl=aws.queue_url(DLQ), MessageBody=json.dumps({"type": "invoice.issued"}))


def test_anonymous_is_sent_to_login(client):
    resp = client.get(URL)
    assert resp.status_code == 302 and "/admin/login/" in resp["Location"]
    assert client.post(URL, {"redrive": DLQ}).status_code == 302


def test_staff_sees_queues_outbox_run_and_chart_but_cannot_redrive_or_replay(client, poisoned):
    client.force_login(staff())
    page = client.get(URL).content.decode()
    assert DLQ in page and "dlq-nonempty attention" in page and "Outbox" in page
    assert 'id="messaging-chart"' in page and 'id="messaging-chart-data"' in page
    assert "Redrive…" not in page and "Preview (dry run)" not in page
    assert client.post(URL, {"redrive": DLQ}).status_code == 403
    assert (
        client.post(
            URL,
            {"replay_preview": "1", "type": "agreement.created", "since": "2026-01-01", "target": "topic"},
        ).status_code
        == 403
    )


def test_redrive_shows_the_dry_run_count_then_moves_the_messages(client, poisoned, sqs):
    client.force_login(staff("redrive_dlq"))
    confirm = client.get(URL, {"redrive": DLQ}).content.decode()
    assert "Dry run: <strong>1</strong> message(s) would move back" in confirm
    assert drain(sqs, "billing-test-payments-events", wait=0) == []  # the dry run moved nothing
    resp = client.post(URL, {"redrive": DLQ}, follow=True)
    assert "Moved 1 message(s)" in resp.content.decode()
    assert len(drain(sqs, "billing-test-payments-events")) == 1


@pytest.mark.parametrize("answer", ["send failed", "delete failed"])
def test_a_redrive_that_went_part_wrong_says_so_on_the_page(client, poisoned, sqs, monkeypatch, answer):
    # given a DLQ whose message's copy is refused, or whose delete after the copy is
    real = aws.client
    odd = (lambda c: OddSendAnswer(c, "both")) if answer == "send failed" else DeletesRefused
    monkeypatch.setattr(aws, "client", lambda service: odd(real(service)))
    client.force_login(staff("redrive_dlq"))
    # when the operator redrives it
    page = client.post(URL, {"redrive": DLQ}, follow=True).content.decode()
    # then the page says "moved 0" and what happened to the message, not only a success
    assert "Moved 0 message(s)" in page
    if answer == "send failed":
        assert "1 message(s) could not be sent back and stay in" in page
    else:
        assert "1 message(s) were copied to billing-test-payments-events but not deleted" in page


def test_replay_previews_the_count_then_replays(client, empty_queues, sqs):
    with transaction.atomic():
        record_events(
            sender=None,
            events=[
                NewEvent(contracts.AGREEMENT_CREATED, f"M-{i}", 1, agreement_data(f"M-{i}")) for i in range(3)
            ],
        )
    relay_pending()
    drain(sqs, "billing-test-invoicing-events")
    client.force_login(staff("replay_event"))
    form = {"type": "agreement.created", "since": "2000-01-01", "target": "invoicing"}
    preview = client.post(URL, {**form, "replay_preview": "1"}).content.decode()
    assert "Replay 3 events to queue billing-test-invoicing-events?" in preview
    assert drain(sqs, "billing-test-invoicing-events", wait=0) == []
    client.post(URL, {**form, "replay": "1"})
    assert len(drain(sqs, "billing-test-invoicing-events")) == 3


# -- what needs an operator is highlighted, with its repair next to it ---------------------------


def test_a_dlq_holding_messages_is_highlighted_with_its_redrive_and_commands(client, poisoned, capsys):
    # given a message in payments' DLQ, when an operator who may redrive opens the page
    page = messaging_page(client, staff("redrive_dlq"))
    # then its row stands out, with the redrive button and the commands that inspect and redrive it
    classes, text = element(page, "tr", "data-queue", DLQ)
    assert "attention" in classes
    assert "Redrive…" in text
    assert 'make manage ARGS="dlq_inspect payments"' in text
    assert 'make manage ARGS="dlq_redrive payments --dry-run"' in text
    # and so does the breached check, with the same repair
    classes, text = element(page, "li", "data-check", "dlq_not_empty")
    assert "attention" in classes and "BREACHED" in text
    assert 'make manage ARGS="dlq_redrive payments --dry-run"' in text
    # and no other queue is highlighted
    for q in ("billing-test-payments-events", "billing-test-invoicing-events-dlq"):
        classes, text = element(page, "tr", "data-queue", q)
        assert "attention" not in classes and "dlq_redrive" not in text
    # and messaging_status prints the same repair under the breach
    with pytest.raises(CommandError):
        call_command("messaging_status", "--no-age")
    out = capsys.readouterr().out
    assert "BREACH: dlq_not_empty: 1 message(s) in ['billing-test-payments-events-dlq']" in out
    assert '    make manage ARGS="dlq_redrive payments --dry-run"' in out


def test_nothing_is_highlighted_and_no_repair_is_offered_when_all_is_well(client, empty_queues):
    heartbeat_record(name="daily_run", detail={"run_date": "2026-11-28", "invoices_issued": 3})
    page = messaging_page(client, staff("redrive_dlq"))
    assert 'class="attention"' not in page and "dlq-nonempty" not in page
    assert "Repair:" not in page and "Redrive…" not in page and "make manage" not in page
    for check in ("dlq_not_empty", "outbox_lagging", "daily_run_missed"):
        assert element(page, "li", "data-check", check)[1] == f"{check}: ok"


def test_a_stale_daily_run_is_highlighted_with_the_command_that_issues_what_is_due(client, empty_queues):
    # given the last daily run finished 30 hours ago (the limit is MONITOR_DAILY_RUN_MAX_AGE_HOURS, 26)
    heartbeat_record(name="daily_run", detail={"run_date": "2026-11-27", "invoices_issued": 12})
    Heartbeat.objects.filter(name="daily_run").update(beat_at=timezone.now() - timedelta(hours=30))
    page = messaging_page(client)
    # then the last run stands out, with the command that issues what is due today
    classes, text = element(page, "div", "id", "daily-run-section")
    assert classes == ["attention"]
    assert "2026-11-27: 12 invoice(s) issued" in text and "Stale: none has finished since." in text
    assert f'make manage ARGS="invoices_issue --date {billing_today().isoformat()}"' in text
    # and once a run has finished, it does not
    heartbeat_record(name="daily_run", detail={"run_date": "2026-11-28", "invoices_issued": 3})
    classes, text = element(messaging_page(client), "div", "id", "daily-run-section")
    assert classes == [] and "invoices_issue" not in text and "Stale" not in text


def test_an_outbox_backlog_is_highlighted_with_where_its_failures_show(client, empty_queues):
    # given 50 events waiting for up to an hour (the limit is MONITOR_OUTBOX_MAX_AGE_SECONDS, 120)
    outbox_backlog_insert(50, spread_seconds=3600)
    page = messaging_page(client)
    # then the outbox stands out, with the relay's repair and the failing rows' admin page
    classes, text = element(page, "div", "id", "outbox-section")
    assert classes == ["attention"]
    assert re.search(r"^50 unpublished \(0 failing\); oldest unpublished (59|60)m\.", text)
    assert "the relay is not keeping up" in text
    assert '<a class="repair-link" href="/admin/events/outboxevent/?published=failing">' in page
    # and a backlog the relay is about to publish (seconds old) is no breach and is not highlighted
    OutboxEvent.objects.all().delete()
    outbox_backlog_insert(50, spread_seconds=1)
    classes, text = element(messaging_page(client), "div", "id", "outbox-section")
    assert classes == [] and "Repair" not in text and text.startswith("50 unpublished")


def test_a_check_an_app_registers_shows_its_own_repair(client, empty_queues):
    # given a daily run running for two hours (invoicing's check: daily_run_stuck)
    run = DailyRun.objects.create(run_date=date(2026, 11, 28), chunks_total=4, chunks_done=1)
    DailyRun.objects.filter(pk=run.pk).update(started_at=timezone.now() - timedelta(hours=2))
    page = messaging_page(client)
    # then its check stands out with the run's admin page and the command that reruns that day
    classes, text = element(page, "li", "data-check", "daily_run_stuck")
    assert "attention" in classes and "1 of 4 chunks done" in text
    assert 'make manage ARGS="invoices_issue --date 2026-11-28"' in text
    assert f'href="/admin/invoicing/dailyrun/{run.pk}/change/"' in page
    # and when it has finished, the check is ok with no repair
    DailyRun.objects.filter(pk=run.pk).update(status=DailyRun.Status.FINISHED)
    assert element(messaging_page(client), "li", "data-check", "daily_run_stuck")[1] == "daily_run_stuck: ok"


def test_the_repair_commands_follow_the_operator_command_setting(client, poisoned, settings):
    settings.OPERATOR_COMMAND = "python manage.py {args}"
    _, text = element(messaging_page(client), "tr", "data-queue", DLQ)
    assert "python manage.py dlq_redrive payments --dry-run" in text and "make manage" not in text
