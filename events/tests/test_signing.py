"""Signatures: anything not signed by a current key, however malformed, is poison at once."""

from __future__ import annotations

import json

import pytest

from events.consuming.runtime import POISON, process_message
from events.models import ConsumerFailure
from events.signing import signed_attributes
from tests.auditapp.models import AuditEntry
from tests.factories import envelope

pytestmark = pytest.mark.django_db


def test_a_forged_signature_with_non_ascii_characters_is_poison_at_once_not_a_retried_failure():
    # given a message whose signature attribute is anything a forger likes, here non-ASCII text
    body = json.dumps(envelope("F-1"))
    forged = {**signed_attributes(body), "signature": {"DataType": "String", "StringValue": "é" * 64}}

    # when the consumer receives it
    outcome = process_message("audit", body, message_id="m-forged", attributes=forged)

    # then it is refused as badly signed and dead-lettered at once, like any other forgery (not a
    # "failed" outcome that comes back MESSAGING_MAX_RECEIVE_COUNT times first)
    assert outcome.result == POISON, (outcome.result, outcome.reason)
    assert "bad signature" in outcome.reason
    assert ConsumerFailure.objects.get(message_id="m-forged").poisoned
    assert not AuditEntry.objects.exists()
