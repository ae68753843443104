"""The Messaging admin page: what operators see, and who may redrive and replay (permission matrix)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.db import transaction

from events import contracts
from events.publishing import NewEvent, record_events
from events.publishing.relay import relay_pending
from events.topology import aws
from tests.factories import agreement_data, drain

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/admin/messaging/"
DLQ = "billing-test-payments-events-dlq"


def staff(*codenames: str) -> User:
    user = User.objects.create_user(f"staff-{'-'.join(codenames) or 'plain'}", password="pw", is_staff=True)
    for c in codenames:
        user.user_permissions.add(Permission.objects.get(codename=c))
    return User.objects.get(pk=user.pk)


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
    assert DLQ in page and 'class="dlq-nonempty"' in page and "Outbox" in page and "<svg" in page
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
