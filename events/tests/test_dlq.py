"""Selective DLQ redrive: every message visited once, and a truthful account of what is left."""

from __future__ import annotations

import json
import re
import time

import pytest
from botocore.exceptions import ClientError
from django.core.management import CommandError, call_command

from events.topology import aws
from tests.factories import AUDIT_QUEUE, DeletesRefused, OddSendAnswer, SqsAnswering, drain, envelope
from tests.factories import queue_depth as queue_counts
from tests.helpers import ctrl_c_at_progress

pytestmark = pytest.mark.django_db(transaction=True)

AUDIT_DLQ = AUDIT_QUEUE + "-dlq"
SELECTED, OTHER = 180, 120


@pytest.fixture
def mixed_dlq(empty_queues, sqs):
    """300 dead letters, interleaved: 180 agreement.created (to redrive), 120 agreement.cancelled."""
    entries = []
    for i in range(SELECTED + OTHER):
        kind = "agreement.created" if i % 5 < 3 else "agreement.cancelled"
        body = json.dumps(envelope(f"D-{i}")) if kind == "agreement.created" else json.dumps({"n": i})
        attrs = {"event_type": {"DataType": "String", "StringValue": kind}}
        entries.append({"Id": str(i % 10), "MessageBody": body, "MessageAttributes": attrs})
    url = aws.queue_url(AUDIT_DLQ)
    for i in range(0, len(entries), 10):
        assert not sqs.send_message_batch(QueueUrl=url, Entries=entries[i : i + 10]).get("Failed")
    return url


def _visible(sqs, queue: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=aws.queue_url(queue), AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def test_selective_redrive_moves_every_selected_message_and_says_what_is_left(mixed_dlq, sqs, capsys):
    # given a dry run first: it counts every selected message and moves nothing
    call_command("dlq_redrive", "audit", "--type", "agreement.created", "--dry-run")
    out = capsys.readouterr().out
    assert f"would move {SELECTED} of 300 message(s)" in out and "examined 300" in out
    assert f"{SELECTED} selected, {OTHER} not selected, 0 not examined" in out
    assert _visible(sqs, AUDIT_DLQ) == 300  # all released at once
    # when the selective redrive runs
    started = time.monotonic()
    call_command("dlq_redrive", "audit", "--type", "agreement.created")
    elapsed = time.monotonic() - started
    # then every selected message moved, the others are left (and visible again), and it says so
    out = capsys.readouterr().out
    assert (
        f"Moved {SELECTED} message(s) from {AUDIT_DLQ} to {AUDIT_QUEUE}; examined 300 of 300. "
        f"Left in {AUDIT_DLQ}: {OTHER} (0 selected, {OTHER} not selected, 0 not examined)."
    ) in out
    assert queue_counts(sqs, AUDIT_QUEUE) == SELECTED
    assert _visible(sqs, AUDIT_DLQ) == OTHER
    assert elapsed < 60


def test_messages_held_elsewhere_or_beyond_max_are_reported_not_examined(mixed_dlq, sqs, capsys):
    # given 10 dead letters held by someone else (an operator's dlq_inspect) during the run
    held = sqs.receive_message(QueueUrl=mixed_dlq, MaxNumberOfMessages=10, VisibilityTimeout=120)["Messages"]
    assert len(held) == 10
    # when a selective redrive runs with --max
    call_command("dlq_redrive", "audit", "--type", "agreement.created", "--max", "50")
    out = capsys.readouterr().out
    # then it moved 50 and accounts for every message left: nothing claimed that is not true
    moved, examined, left, selected, other, unexamined = map(
        int,
        re.search(
            r"Moved (\d+) .* examined (\d+) of 300\. Left in \S+: (\d+) "
            r"\((\d+) selected, (\d+) not selected, (\d+) not examined\)",
            out,
        ).groups(),
    )
    assert moved == 50 and left == 250 and selected + other + unexamined == 250
    assert unexamined >= 10 and examined + unexamined == 300
    assert "Run it again to look at them" in out
    assert queue_counts(sqs, AUDIT_QUEUE) == 50


def test_ctrl_c_mid_redrive_says_what_moved_and_the_command_that_moves_the_rest(mixed_dlq, sqs, monkeypatch):
    # given a selective redrive, and Ctrl-C once it has looked at 6 receive batches (60 messages)
    ctrl_c_at_progress(monkeypatch, 6)
    with pytest.raises(CommandError) as exc:
        call_command("dlq_redrive", "audit", "--type", "agreement.created")

    # then it exits 130 saying how many moved, which is what reached the source queue ...
    message = str(exc.value)
    assert exc.value.returncode == 130
    moved = int(
        re.search(r"Interrupted: moved (\d+) message\(s\) from \S+ to \S+, looked at 60 of 300", message)[1]
    )
    assert 0 < moved < SELECTED
    assert queue_counts(sqs, AUDIT_QUEUE) == moved
    # ... every other message is back in the DLQ at once (the ones it held are released) ...
    assert _visible(sqs, AUDIT_DLQ) == 300 - moved
    # ... and the command it gives moves the rest
    resume = "python manage.py dlq_redrive audit --type agreement.created"
    assert f"To resume, run:\n  {resume}\n" in message
    monkeypatch.undo()
    call_command("dlq_redrive", *resume.split()[3:])
    assert queue_counts(sqs, AUDIT_QUEUE) == SELECTED
    assert _visible(sqs, AUDIT_DLQ) == OTHER


def test_holds_expiring_mid_pass_never_make_it_claim_less_is_left_than_is(mixed_dlq, sqs, monkeypatch):
    """The reported bug: holds expired on a deep queue, the pass stopped at the first batch of
    messages it had already seen, and "635 left" hid 364 selected messages still there."""
    from events.consuming import dlq

    receive = dlq._receive
    monkeypatch.setattr(dlq, "_receive", lambda queue, hold_seconds: receive(queue, hold_seconds=1))
    report = dlq.redrive(AUDIT_DLQ, AUDIT_QUEUE, selection=dlq.Selection(event_type="agreement.created"))
    # what is really left, by type
    time.sleep(1.1)
    left = {"agreement.created": 0, "agreement.cancelled": 0}
    for m in _drain(sqs, mixed_dlq):
        left[m["MessageAttributes"]["event_type"]["StringValue"]] += 1
    assert report.moved + sum(left.values()) == 300
    assert report.depth_after == sum(left.values())
    # every selected message left is counted as selected or as not examined, never as "not selected"
    assert report.left_selected <= left["agreement.created"] <= report.left_selected + report.unexamined
    assert report.left_unselected <= left["agreement.cancelled"]


def _drain(sqs, url: str) -> list[dict]:
    got = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60, MessageAttributeNames=["All"]
    ).get("Messages", []):
        got.extend(batch)
    return got


def test_an_impossible_duration_is_a_command_error(provisioned):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="longer than any message can be old"):
        call_command("dlq_redrive", "audit", "--older-than", "99999999999999d", "--dry-run")


def test_ctrl_c_while_a_batch_is_in_hand_leaves_no_message_hidden(mixed_dlq, sqs, monkeypatch):
    from events.consuming import dlq

    # given a selective redrive, and Ctrl-C while it looks at the 5th message of its 3rd batch
    describe, looked = dlq._describe, 0

    def describe_then_ctrl_c(msg, **kwargs):
        nonlocal looked
        looked += 1
        if looked == 25:
            raise KeyboardInterrupt
        return describe(msg, **kwargs)

    monkeypatch.setattr(dlq, "_describe", describe_then_ctrl_c)
    with pytest.raises(CommandError) as exc:
        call_command("dlq_redrive", "audit", "--type", "agreement.created")
    moved = int(re.search(r"Interrupted: moved (\d+) message\(s\)", str(exc.value))[1])
    # then every message not moved is visible in the DLQ at once, the batch at hand too (not hidden
    # for the pass's hold of 5 minutes), so the command it gives, run now, moves all the rest
    assert queue_counts(sqs, AUDIT_QUEUE) == moved
    assert _visible(sqs, AUDIT_DLQ) == 300 - moved
    monkeypatch.undo()
    call_command("dlq_redrive", "audit", "--type", "agreement.created")
    assert queue_counts(sqs, AUDIT_QUEUE) == SELECTED
    assert _visible(sqs, AUDIT_DLQ) == OTHER


def test_a_message_whose_copy_the_source_queue_does_not_confirm_stays_in_the_dlq(
    empty_queues, sqs, monkeypatch, capsys
):
    # given three dead letters, and a source queue whose answer lists the first copy both as sent
    # and as failed
    url = aws.queue_url(AUDIT_DLQ)
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(envelope(f"U-{i}")))
    client = aws.client
    monkeypatch.setattr(aws, "client", lambda service: OddSendAnswer(client(service), "both"))

    # when they are redriven
    with pytest.raises(CommandError, match="and yet"):
        call_command("dlq_redrive", "audit")

    # then the unconfirmed one is left in the DLQ (a later redrive sends it again), never deleted
    monkeypatch.undo()
    left = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", [])
    moved = drain(sqs, AUDIT_QUEUE)
    assert len(left) == 1 and len(moved) == 3  # (its copy did arrive: sent again, it is a duplicate)


def _dead_letters_behind(sqs, monkeypatch, wrapper, n: int = 25) -> None:  # noqa: ANN001 - fixtures
    """n dead letters in the audit DLQ, and every SQS client the project makes wrapped in ``wrapper``."""
    url = aws.queue_url(AUDIT_DLQ)
    for i in range(n):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(envelope(f"K-{i}")))
    client = aws.client
    monkeypatch.setattr(aws, "client", lambda service: wrapper(client(service)))


def test_copies_the_dlq_does_not_delete_are_reported_as_in_both_queues_not_as_moved(
    empty_queues, sqs, monkeypatch, capsys
):
    # given 25 dead letters (three batches of 10), and a DLQ that refuses each batch's first delete
    _dead_letters_behind(sqs, monkeypatch, DeletesRefused)

    # when they are redriven
    call_command("dlq_redrive", "audit")

    # then 22 moved, and the 3 copied but not deleted are said to be in both queues, not "not examined"
    out = capsys.readouterr().out
    assert f"Moved 22 message(s) from {AUDIT_DLQ} to {AUDIT_QUEUE}; examined 25 of 25." in out
    assert "0 not examined, 3 copied but not deleted)" in out
    assert f"3 of the messages left were copied to {AUDIT_QUEUE} but not deleted" in out
    assert "Not examined" not in out
    monkeypatch.undo()
    assert len(drain(sqs, AUDIT_QUEUE)) == 25
    # and they are visible in the DLQ at once, not hidden for the redrive's hold: the next redrive
    # sends them again
    assert _visible(sqs, AUDIT_DLQ) == 3
    call_command("dlq_redrive", "audit")
    assert "Moved 3 message(s)" in capsys.readouterr().out
    assert _visible(sqs, AUDIT_DLQ) == 0


class _DeletesForbidden(SqsAnswering):
    """DeleteMessageBatch refused as a whole (no sqs:DeleteMessage on the DLQ)."""

    def delete_message_batch(self, **request):
        error = {"Error": {"Code": "AccessDenied", "Message": "no sqs:DeleteMessage"}}
        raise ClientError(error, "DeleteMessageBatch")


def test_a_dlq_that_refuses_every_delete_stops_the_redrive_after_one_batch_and_says_so(
    empty_queues, sqs, monkeypatch, capsys
):
    # given 25 dead letters, and an operator allowed to send to the source queue but not to delete
    # from the DLQ
    _dead_letters_behind(sqs, monkeypatch, _DeletesForbidden)

    # when they are redriven
    with pytest.raises(
        CommandError, match=f"Stopped after 10 of 25 .*{AUDIT_DLQ} refused DeleteMessageBatch"
    ):
        call_command("dlq_redrive", "audit")

    # then it stops after the first batch (each more would only be copied again), says the 10 it
    # copied are in both queues and why, and leaves all 25 visible in the DLQ
    out = capsys.readouterr().out
    assert f"Moved 0 message(s) from {AUDIT_DLQ} to {AUDIT_QUEUE}" in out
    assert "10 of the messages left were copied" in out and "AccessDenied" in out
    monkeypatch.undo()
    assert len(drain(sqs, AUDIT_QUEUE)) == 10
    assert _visible(sqs, AUDIT_DLQ) == 25


class _SendsForbidden(SqsAnswering):
    """SendMessageBatch refused as a whole (no sqs:SendMessage on the source queue)."""

    def send_message_batch(self, **request):
        error = {"Error": {"Code": "AccessDenied", "Message": "no sqs:SendMessage"}}
        raise ClientError(error, "SendMessageBatch")


def test_a_source_queue_that_refuses_every_send_stops_the_redrive_and_leaves_all_in_the_dlq(
    empty_queues, sqs, monkeypatch, capsys
):
    # given 25 dead letters, and an operator not allowed to send to the source queue
    _dead_letters_behind(sqs, monkeypatch, _SendsForbidden)
    # when they are redriven: a clear error, not a traceback
    with pytest.raises(CommandError, match=f"{AUDIT_QUEUE} refused SendMessageBatch .*AccessDenied"):
        call_command("dlq_redrive", "audit")
    # then nothing moved, and every message is visible in the DLQ again at once
    assert f"Moved 0 message(s) from {AUDIT_DLQ}" in capsys.readouterr().out
    monkeypatch.undo()
    assert drain(sqs, AUDIT_QUEUE, wait=0) == []
    assert _visible(sqs, AUDIT_DLQ) == 25
