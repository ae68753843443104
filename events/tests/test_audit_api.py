"""The delivery audit through a producer's events API (a consumer running as a service of its own),
the ``events_audit`` command, and the Messaging page's audit panel. Real PostgreSQL, the SQS
endpoint, and the API served over HTTP by a live server."""

from __future__ import annotations

import json
import re
import secrets
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import transaction
from django.db.models import F

from events import contracts, topology
from events.audit import AuditError, delivery_audit_run
from events.audit import remote as remote_source
from events.consuming.runtime import process_message
from events.models import ApiToken, DeliveryAudit, OutboxEvent
from events.publishing.outbox import NewEvent, record_events
from events.publishing.relay import relay_pending
from events.signing import verify
from tests.factories import agreement_data, drain

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lost(empty_queues, sqs):
    """Five agreement.created published an hour ago: the audit consumer handled two, lost three;
    plus one recorded and not published yet (the relay's, not the audit's)."""
    with transaction.atomic():
        record_events(
            sender=None,
            events=[
                NewEvent(contracts.AGREEMENT_CREATED, f"R-{i}", 1, agreement_data(f"R-{i}")) for i in range(5)
            ],
        )
    relay_pending()
    with transaction.atomic():
        record_events(
            sender=None, events=[NewEvent(contracts.AGREEMENT_CREATED, "R-new", 1, agreement_data("R-new"))]
        )
    for m in drain(sqs, topology.event_queue_name("audit"), wait=0):
        if json.loads(m["Body"])["aggregate_id"] in ("R-0", "R-3"):
            process_message("audit", m["Body"], message_id=m["MessageId"], attributes=m["MessageAttributes"])
    OutboxEvent.objects.exclude(published_at=None).update(
        occurred_at=F("occurred_at") - timedelta(hours=1), published_at=F("published_at") - timedelta(hours=1)
    )
    return sorted(
        str(i)
        for i in OutboxEvent.objects.filter(aggregate_id__in=["R-1", "R-2", "R-4"]).values_list(
            "id", flat=True
        )
    )


@pytest.fixture
def remote(settings, live_server):
    """The agreements producer is "another service": its events come from its API with a token."""
    key = secrets.token_urlsafe(32)
    ApiToken.objects.create(name="invoicing-audit", key_hash=ApiToken.hash_key(key))
    settings.DELIVERY_AUDIT_REMOTE_PRODUCERS = {
        "agreements": {"url": f"{live_server.url}/api/events/", "token": key}
    }
    return settings.DELIVERY_AUDIT_REMOTE_PRODUCERS["agreements"]


def test_through_the_events_api_with_a_token_it_finds_and_resends_what_is_missing(
    lost, remote, sqs, monkeypatch
):
    monkeypatch.setattr(remote_source, "PAGE", 2)  # several pages, each followed by its cursor

    report = delivery_audit_run(consumer="audit", repair=True)

    assert report.sources == [f"agreements: {remote['url']}"]
    c = report.counts["agreement.created"]
    assert (c.published, c.handled, c.missing) == (5, 2, 3)  # R-new is not published: not counted
    assert report.resent == 3
    got = drain(sqs, topology.event_queue_name("audit"), wait=0)
    assert sorted(json.loads(m["Body"])["id"] for m in got) == lost
    for m in got:  # the producer's exact bytes, signed as every publish
        assert m["Body"] == OutboxEvent.objects.get(id=json.loads(m["Body"])["id"]).message_body()
        verify(m["Body"], m["MessageAttributes"])
    # the watermark stops at the oldest event not yet accounted for (now re-sent, in flight)
    oldest = OutboxEvent.objects.filter(id__in=lost).order_by("occurred_at").first()
    assert DeliveryAudit.objects.get(consumer="audit").watermark == oldest.occurred_at


def test_the_events_api_refuses_the_audit_without_a_valid_token(lost, remote, settings):
    settings.DELIVERY_AUDIT_REMOTE_PRODUCERS = {"agreements": {**remote, "token": "not-a-token"}}
    with pytest.raises(AuditError, match=r"refused the token \(401\).*api_token_create"):
        delivery_audit_run(consumer="audit")
    with pytest.raises(CommandError, match="refused the token"):
        call_command("events_audit", "--consumer", "audit")
    settings.DELIVERY_AUDIT_REMOTE_PRODUCERS = {"agreements": {"url": remote["url"]}}
    with pytest.raises(AuditError, match="needs both 'url'.*and 'token'"):
        delivery_audit_run(consumer="audit")
    assert not DeliveryAudit.objects.exists()  # nothing recorded by a pass that could not run


def test_the_command_prints_per_type_counts_and_exits_2_when_something_is_missing(lost, sqs, capsys):
    # a dry run: what --repair would do, nothing changed or sent
    with pytest.raises(CommandError, match="3 event.s. missing") as exc:
        call_command("events_audit", "--consumer", "audit", "--repair", "--dry-run")
    assert exc.value.returncode == 2
    out = capsys.readouterr().out
    assert "audit: the whole event store; agreements: this database" in out
    assert re.search(r"event type\s+published\s+handled\s+dead-lettered\s+in flight\s+missing\n", out)
    assert re.search(r"agreement\.created\s+5\s+2\s+0\s+0\s+3\n", out)
    assert "would re-send 3 to audit's queue" in out and "dry run: nothing changed" in out
    assert drain(sqs, topology.event_queue_name("audit"), wait=0) == [] and not DeliveryAudit.objects.exists()

    # reporting only: the gap is alerted, nothing re-sent, and it says how to repair
    with pytest.raises(CommandError, match=r"3 event\(s\) missing \(run again with --repair"):
        call_command("events_audit", "--consumer", "audit")
    assert "watermark never ->" in capsys.readouterr().out
    assert OutboxEvent.objects.filter(type="alert.delivery_gap", published_at__isnull=False).count() == 1

    # repairing
    with pytest.raises(CommandError):
        call_command("events_audit", "--consumer", "audit", "--full", "--repair")
    assert "re-sent 3 to audit's queue (0 failed)" in capsys.readouterr().out
    assert len(drain(sqs, topology.event_queue_name("audit"), wait=0)) == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--consumer", "billing"],
            "'billing' is not a consumer; consumers: invoicing, payments, alerts_mail, audit",
        ),
        (["--since", "last week"], "is not an ISO date or datetime"),
        (["--since", "2026-11-01", "--full"], "not allowed with argument --since"),
        (["--max", "-1"], "--max must be 0 or more"),
    ],
)
def test_bad_arguments_say_what_to_do(db, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("events_audit", *args)


def test_the_messaging_page_shows_each_consumers_last_pass(lost, client):
    delivery_audit_run(consumer="audit")
    client.force_login(User.objects.create_superuser("op", password="pw"))
    page = client.get("/admin/messaging/").content.decode()
    assert 'id="delivery-audit"' in page
    row = page[page.index('data-consumer="audit"') :]
    row = row[: row.index("</tr>")]
    assert "delivery gap" in row and '<td class="missing">3</td>' in row
    watermark = DeliveryAudit.objects.get(consumer="audit").watermark
    assert f"{watermark:%Y-%m-%d %H:%M:%S} UTC" in row
    never = page[page.index('data-consumer="payments"') :]
    assert "never" in never[: never.index("</tr>")]


def test_bad_audit_settings_are_refused_at_start(settings):
    from events.checks import check_messaging_settings

    assert not {"billing.E007", "billing.E008"} & {e.id for e in check_messaging_settings()}
    settings.DELIVERY_AUDIT_REMOTE_PRODUCERS = {"agreements": {"url": "agreements.internal/api/events/"}}
    settings.DELIVERY_AUDIT_CONSUMERS = "invoicing,billing"
    errors = {e.id: e.msg for e in check_messaging_settings()}
    assert "needs a producer among" in errors["billing.E007"]
    assert "['billing'], not consumers" in errors["billing.E008"]
