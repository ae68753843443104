"""The rows ``record_events`` writes by COPY hold what ``build_row`` makes of the same events,
and the size limit is decided on the whole envelope, whatever shortcut the writing takes."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from django.db import transaction
from django.utils import timezone

from events import contracts, envelope
from events.models import OutboxEvent
from events.publishing.outbox import NewEvent, build_row, record_events
from tests.factories import agreement_data

pytestmark = pytest.mark.django_db

# next_attempt_at is the database's (test_outbox.py's clock tests)
FIELDS = [f.attname for f in OutboxEvent._meta.concrete_fields if f.attname != "next_attempt_at"]
AT = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)  # every envelope's time, the same length


def alert(blob: str) -> NewEvent:
    """An event whose data carries ``blob`` as it is (an alert's details are free-form)."""
    data = {"check": "dlq", "severity": "warning", "summary": "x", "details": {"blob": blob}}
    return NewEvent("alert.dlq_not_empty", "dlq", 1, data, occurred_at=AT)


def record(*events: NewEvent) -> None:
    with transaction.atomic():
        record_events(sender=None, events=list(events))


def test_a_recorded_row_holds_what_build_row_makes_and_sends_the_same_body():
    events = [
        # text COPY must escape, and JSON escapes of its own
        NewEvent(
            contracts.AGREEMENT_CREATED,
            "A-1",
            1,
            agreement_data("A-1", description='tab\there, "quoted", back\\slash, line\nbreak, é'),
        ),
        alert("x"),  # another producer: its own priority
    ]
    record(*events)
    for event in events:
        row = OutboxEvent.objects.get(pk=event.id)
        expected = build_row(event, row.occurred_at)  # the same "now" the recording used
        assert {f: getattr(row, f) for f in FIELDS} == {f: getattr(expected, f) for f in FIELDS}
        assert row.message_body() == expected.message_body()


@pytest.mark.parametrize("char", ["é", "€", "😀"], ids=["2 bytes", "3 bytes", "4 bytes"])
def test_an_event_that_fits_only_by_its_bytes_is_recorded_and_one_a_byte_over_is_refused(char):
    # The whole envelope with a blob of no characters: what the blob may add to it.
    empty = len(build_row(alert(""), timezone.now()).message_body().encode())
    room, width = envelope.MAX_EVENT_BYTES - empty, len(char.encode())
    # As many of the character as fit: in bytes they do, by four bytes a character they may not.
    fits = alert(char * (room // width))
    record(fits)
    assert len(OutboxEvent.objects.get(pk=fits.id).message_body().encode()) <= envelope.MAX_EVENT_BYTES
    # One more character, or as many bytes of ASCII as are left and one more: refused.
    for over in (char * (room // width + 1), char * (room // width) + "x" * (room % width + 1)):
        with pytest.raises(contracts.ContractError, match="over the 245760-byte limit"):
            record(alert(over))


def test_the_body_writes_what_the_database_gives_back_past_orjson_and_refuses_what_is_no_utf8():
    # jsonb gives a float such as 1e20 back as the integer 10**20 (past orjson's 64 bits); it is
    # written as that JSON number, which reads back as the number recorded
    assert envelope.serialize({"b": {"n": 10**20}, "a": 1}) == '{"a":1,"b":{"n":100000000000000000000}}'
    assert orjson.loads(envelope.serialize({"n": 10**20}))["n"] == 1e20
    # a lone surrogate is no UTF-8: refused as orjson refuses it, not written for SNS to choke on
    with pytest.raises(orjson.JSONEncodeError):
        envelope.serialize({"s": "\ud800"})
