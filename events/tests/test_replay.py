"""Replay: to every subscriber through the topic, or to one consumer's queue only."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone

from events import contracts, topology
from events.management.commands import events_replay
from events.models import OutboxEvent
from events.publishing import replay as replaying
from events.publishing.outbox import NewEvent, record_events
from events.publishing.relay import relay_pending
from events.signing import verify
from events.topology import aws
from tests.factories import OddSendAnswer, agreement_data, drain
from tests.helpers import ctrl_c_at_progress

pytestmark = pytest.mark.django_db(transaction=True)


def invoice_data(n: int) -> dict:
    return {
        "invoice_id": f"I-{n}",
        "number": f"INV-{n}",
        "agreement_id": "A-1",
        "customer": {"external_ref": "C-1", "name": "Ada", "email": "ada@example.com"},
        "period_start": "2026-01-01",
        "period_end": "2026-02-01",
        "total_minor": 100,
        "currency": "EUR",
        "due_date": "2026-01-15",
    }


@pytest.fixture
def published(empty_queues, sqs):
    """3 agreement events and 2 invoice events, published and consumed once already."""
    with transaction.atomic():
        record_events(
            sender=None,
            events=[
                NewEvent(contracts.AGREEMENT_CREATED, f"A-{i}", 1, agreement_data(f"A-{i}")) for i in range(3)
            ]
            + [NewEvent(contracts.INVOICE_ISSUED, f"I-{i}", 1, invoice_data(i)) for i in range(2)],
        )
    assert relay_pending().published == 5
    drain(sqs, topology.event_queue_name("invoicing"))
    drain(sqs, topology.event_queue_name("payments"))
    return OutboxEvent.objects.all()


def bodies(sqs, consumer: str) -> list[dict]:
    """The messages' envelopes; each must be signed like the relay signs (a replay is not a forgery)."""
    got = drain(sqs, topology.event_queue_name(consumer), wait=0)
    for m in got:
        verify(m["Body"], m.get("MessageAttributes"))
    return [json.loads(m["Body"]) | {"_attrs": m.get("MessageAttributes", {})} for m in got]


def test_replay_to_topic_reaches_every_subscriber_with_the_original_ids(published, sqs, capsys):
    call_command("events_replay", "--type", "invoice.issued", "--to-topic")
    out = capsys.readouterr().out
    assert "Replayed 2 event(s) to their topics." in out
    got = bodies(sqs, "payments")
    assert sorted(b["id"] for b in got) == sorted(
        str(i) for i in OutboxEvent.objects.filter(type="invoice.issued").values_list("id", flat=True)
    )
    assert all(b["_attrs"]["replayed"]["StringValue"] == "true" for b in got)
    assert bodies(sqs, "invoicing") == []  # its filter policy does not select invoice.issued


def test_replay_to_one_queue_reaches_only_that_consumer(published, sqs, capsys):
    # agreement events sent straight to the payments queue (backfilling a consumer)
    call_command("events_replay", "--type", "agreement.created", "--to-queue", "payments")
    got = bodies(sqs, "payments")
    assert sorted(b["aggregate_id"] for b in got) == ["A-0", "A-1", "A-2"]
    assert all(b["_attrs"]["event_type"]["StringValue"] == "agreement.created" for b in got)
    assert bodies(sqs, "invoicing") == []  # the topic's other subscriber saw nothing


def test_an_entry_the_answer_does_not_list_is_reported_failed_not_replayed(
    published, sqs, monkeypatch, capsys
):
    client = aws.client
    monkeypatch.setattr(aws, "client", lambda service: OddSendAnswer(client(service), "left-out"))
    with pytest.raises(CommandError) as exc:
        call_command("events_replay", "--type", "agreement.created", "--to-queue", "payments")
    # the operator is told one of the three was not sent, and why (to run it again)
    assert str(exc.value) == "1 event(s) were not sent: SendMessageBatch's answer did not list this entry"
    assert "Sent 2, failed 1." in capsys.readouterr().out


def test_dry_run_prints_count_and_sample_and_sends_nothing(published, sqs, capsys):
    call_command("events_replay", "--all", "--to-topic", "--dry-run")
    out = capsys.readouterr().out
    assert "Would replay 5 event(s) to their topics." in out
    assert "agreement.created" in out
    assert bodies(sqs, "invoicing") == [] and bodies(sqs, "payments") == []


def test_selection_by_id_and_aggregate(published, sqs):
    event = OutboxEvent.objects.get(aggregate_id="A-1")
    call_command("events_replay", "--id", str(event.id), "--to-queue", "invoicing")
    assert [b["id"] for b in bodies(sqs, "invoicing")] == [str(event.id)]
    call_command("events_replay", "--aggregate-id", "A-2", "--since", "2000-01-01", "--to-queue", "invoicing")
    assert [b["aggregate_id"] for b in bodies(sqs, "invoicing")] == ["A-2"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--to-topic"], "Say which events"),
        (["--all", "--to-queue", "nope"], "no queue 'nope'"),
        (["--id", "42", "--to-topic"], "is not an event id"),
        (["--type", "agreement.made", "--to-topic"], "not a known event type"),
        (["--since", "yesterday", "--to-topic"], "is not an ISO date"),
        (["--since", "2026-13-45", "--to-topic"], r"not a valid date .*expected YYYY-MM-DD"),
        (["--until", "2026-02-30T10:00", "--to-topic"], r"not a valid date .*expected YYYY-MM-DD"),
        (["--since", "2026-02-01", "--until", "2026-01-01", "--to-topic"], "--since must be before --until"),
    ],
)
def test_bad_arguments_give_an_actionable_command_error(published, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("events_replay", *args)


def stored_a_second_apart(prefix: str, n: int) -> list[OutboxEvent]:
    """n agreement.created events recorded an hour ago, a second apart, oldest first."""
    start = timezone.now() - timedelta(hours=1)
    with transaction.atomic():
        record_events(
            sender=None,
            events=[
                NewEvent(
                    contracts.AGREEMENT_CREATED,
                    f"{prefix}-{i:02}",
                    1,
                    agreement_data(f"{prefix}-{i:02}"),
                    occurred_at=start + timedelta(seconds=i),
                )
                for i in range(n)
            ],
        )
    return list(OutboxEvent.objects.order_by("occurred_at", "id"))


def test_ctrl_c_says_how_far_it_got_and_the_command_that_resumes(empty_queues, sqs, monkeypatch):
    # given 25 stored events a second apart, replayed to one queue in pages of 10
    ordered = stored_a_second_apart("R", 25)
    monkeypatch.setattr(events_replay, "PAGE_SIZE", 10)

    # when the operator presses Ctrl-C while the second page is being sent
    ctrl_c_at_progress(monkeypatch, 2)
    with pytest.raises(CommandError) as exc:
        call_command("events_replay", "--type", "agreement.created", "--to-queue", "invoicing")

    # then it says how far it got and the exact command that resumes it
    message = str(exc.value)
    assert exc.value.returncode == 130
    assert "Interrupted: replayed 20 of 25 event(s)" in message
    resume = next(
        line.strip() for line in message.splitlines() if line.strip().startswith("python manage.py")
    )
    assert resume == (
        "python manage.py events_replay --type agreement.created "
        f"--since {ordered[10].occurred_at.isoformat()} --to-queue invoicing"
    )
    assert "consumers skip event ids they have already handled" in message
    first_run = [b["id"] for b in bodies(sqs, "invoicing")]
    assert sorted(first_run) == sorted(str(e.id) for e in ordered[:20])

    # and running it sends from the first event of the interrupted page on: nothing is missed
    monkeypatch.undo()
    args = resume.split()[3:]
    call_command("events_replay", *args)
    resumed = [b["id"] for b in bodies(sqs, "invoicing")]
    assert sorted(resumed) == sorted(str(e.id) for e in ordered[10:])
    assert set(first_run) | set(resumed) == {str(e.id) for e in ordered}


def test_ctrl_c_after_some_events_failed_resumes_where_they_failed(empty_queues, sqs, monkeypatch):
    # given 25 stored events replayed to one queue in pages of 10, two of the first page refused by SQS
    ordered = stored_a_second_apart("F", 25)
    refused = {str(ordered[3].id), str(ordered[4].id)}
    monkeypatch.setattr(events_replay, "PAGE_SIZE", 10)
    send = replaying.send_to_queue

    def sqs_refusing_two(queue, rows):  # SendMessageBatch's answer: two entries Failed
        rows = list(rows)
        failed = send(queue, [r for r in rows if str(r.id) not in refused])
        return failed | {str(r.id): "InternalError: try again" for r in rows if str(r.id) in refused}

    monkeypatch.setattr(replaying, "send_to_queue", sqs_refusing_two)
    # when the operator presses Ctrl-C during the second page
    ctrl_c_at_progress(monkeypatch, 2)
    with pytest.raises(CommandError) as exc:
        call_command("events_replay", "--type", "agreement.created", "--to-queue", "invoicing")

    # then it says what was sent and what failed, and resumes from the page where events failed
    message = str(exc.value)
    assert "Interrupted: replayed 18 of 25 event(s); 2 failed (InternalError: try again" in message
    resume = next(
        line.strip() for line in message.splitlines() if line.strip().startswith("python manage.py")
    )
    assert f"--since {ordered[0].occurred_at.isoformat()}" in resume
    first_run = {b["id"] for b in bodies(sqs, "invoicing")}
    assert len(first_run) == 18 and not refused & first_run
    # and the command it gives sends the two that failed: every event reached the queue in the end
    monkeypatch.undo()
    call_command("events_replay", *resume.split()[3:])
    assert first_run | {b["id"] for b in bodies(sqs, "invoicing")} == {str(e.id) for e in ordered}
