"""What fails in a relay pass fails alone: a row whose message cannot be made, an entry the
endpoint refuses with text the database cannot hold, an entry its answer leaves out. Each is
recorded on its row with a reason and a backoff; the pass's other rows are published and marked,
and no pass after it is blocked (nor anything published twice for it)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from django.db import transaction
from django.utils import timezone

from events import envelope
from events.consuming.failures import record_failure
from events.models import ConsumerFailure, OutboxEvent
from events.operations.alerts import record_alert
from events.publishing import relay_pass, sns
from events.publishing.relay import relay_exclusive
from events.topology import aws
from tests.factories import record_agreements_created

pytestmark = pytest.mark.django_db(transaction=True)


def lagging(details: dict[str, Any]) -> None:
    """Commit an ``alert.outbox_lagging`` with these details."""
    with transaction.atomic():
        record_alert(
            sender=None, check="outbox_lagging", about="x", severity="warning", summary="s", details=details
        )


def published() -> int:
    return OutboxEvent.objects.filter(published_at__isnull=False).count()


def test_an_alerts_number_that_jsonb_gives_back_past_64_bits_is_published_as_recorded(empty_queues):
    # an alert's details may hold any number: 1e20 goes into jsonb as a number and comes back as
    # the integer 10**20, which orjson (64-bit integers) cannot write
    lagging({"rate": 1e20})
    record_agreements_created(3, "ok")

    result = relay_exclusive()

    assert result is not None and (result.published, result.failed) == (4, 0)
    alert = OutboxEvent.objects.get(type="alert.outbox_lagging")
    assert orjson.loads(alert.message_body())["data"]["details"]["rate"] == 1e20


def test_a_row_whose_message_cannot_be_made_fails_alone_and_every_pass_goes_on(monkeypatch, empty_queues):
    # given an alert whose message cannot be made (whatever the cause), claimed first by every pass
    lagging({})
    record_agreements_created(3, "ok")
    serialize = envelope.serialize

    def refusing(values: dict[str, Any]) -> str:
        if values["type"] == "alert.outbox_lagging":
            raise TypeError("Integer exceeds 64-bit range")
        return serialize(values)

    monkeypatch.setattr(envelope, "serialize", refusing)
    result = relay_exclusive()

    assert result is not None and (result.published, result.failed) == (3, 1)
    assert published() == 3
    alert = OutboxEvent.objects.get(type="alert.outbox_lagging")
    assert alert.published_at is None and alert.attempts == 1
    assert alert.last_error == "its message cannot be made: TypeError: Integer exceeds 64-bit range"
    assert alert.next_attempt_at > timezone.now()  # backoff: later passes are not held up by it
    record_agreements_created(2, "later")
    again = relay_exclusive()
    assert again is not None and again.published == 2 and again.failed == 0
    assert published() == 5


def test_an_endpoint_error_holding_a_nul_is_recorded_escaped_and_the_rest_are_marked(
    monkeypatch, empty_queues
):
    record_agreements_created(5, "n")
    sent: list[str] = []
    real = sns.publish_batch

    def publish(topic: str, rows: list[Any], **kw: Any) -> dict[str, str]:
        sent.extend(str(r.id) for r in rows)
        return {str(rows[0].id): "InternalError: bad\x00byte"} | real(topic, rows[1:], **kw)

    monkeypatch.setattr(sns, "publish_batch", publish)
    first = relay_pass.relay_once()
    second = relay_pass.relay_once()  # the refused row waits for its backoff: nothing is sent again

    assert (first.published, first.failed) == (4, 1) and second.published == second.failed == 0
    assert published() == 4 and len(sent) == 5
    refused = OutboxEvent.objects.get(published_at__isnull=True)
    assert refused.last_error == "InternalError: bad\\u0000byte"
    assert refused.errors[-1]["error"] == "InternalError: bad\\u0000byte"


class OddAnswer:
    """The endpoint's calls, but PublishBatch's answer says something odd of the batch's first
    entry (sent): lists it neither as successful nor as failed, or as both, or under an id the
    request did not hold (-1 would name the last entry as a list index)."""

    def __init__(self, calls: Any, odd: str) -> None:
        self.calls, self.odd = calls, odd

    def publish_batch(self, **request: Any) -> dict[str, Any]:
        answer = self.calls.publish_batch(**request)
        answer = {key: [e for e in answer.get(key, []) if e["Id"] != "0"] for key in ("Successful", "Failed")}
        if self.odd == "listed-as-both":
            answer["Successful"].append({"Id": "0", "MessageId": "m-0"})
            answer["Failed"].append({"Id": "0", "Code": "InternalError", "Message": "and yet"})
        elif self.odd.startswith("id "):
            answer["Successful"].append({"Id": self.odd[3:], "MessageId": "m-0"})
        return answer


@pytest.mark.parametrize("odd", ["left-out", "listed-as-both", "id -1", "id 7", "id x"])
def test_an_entry_the_endpoints_answer_does_not_say_was_sent_is_not_taken_as_published(
    monkeypatch, empty_queues, odd
):
    record_agreements_created(2, "m")
    calls = aws.calls
    monkeypatch.setattr(aws, "calls", lambda service: OddAnswer(calls(service), odd))

    result = relay_pass.relay_once()

    assert (result.published, result.failed) == (1, 1)
    odd_row = OutboxEvent.objects.get(published_at__isnull=True)
    reason = (
        "InternalError: and yet"
        if odd == "listed-as-both"
        else "PublishBatch's answer did not list this entry"
    )
    assert odd_row.attempts == 1 and odd_row.last_error == reason
    assert OutboxEvent.objects.get(published_at__isnull=False).sns_message_id != ""


def test_a_consumer_failure_whose_text_holds_a_nul_is_recorded_escaped():
    record_failure(
        "invoicing",
        "m-nul",
        {"id": "e\x00", "type": "agreement.created", "aggregate_id": "A\ud800"},
        "boom\x00",
        poisoned=True,
    )

    failure = ConsumerFailure.objects.get(message_id="m-nul")
    assert (failure.first_error, failure.last_error) == ("boom\\u0000", "boom\\u0000")
    assert (failure.event_id, failure.aggregate_id) == ("e\\u0000", "A\\ud800")
