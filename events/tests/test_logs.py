"""Logs: every line about an event carries its ids; secrets never reach the output."""

from __future__ import annotations

import io
import json
import logging

import pytest

from events.operations.logs import ContextFilter, json_formatter
from tests.factories import deliver, envelope


@pytest.fixture
def json_log():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old)


@pytest.mark.django_db
def test_lines_about_an_event_carry_its_id_type_and_consumer(json_log):
    env = envelope("A-log", type="agreement.paused")  # no handler: logged and acknowledged
    deliver("audit", json.dumps(env), message_id="sqs-123")
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    line = next(entry for entry in lines if "no handler" in entry["message"])
    assert (line["event_id"], line["event_type"], line["consumer"], line["sqs_message_id"]) == (
        env["id"],
        "agreement.paused",
        "audit",
        "sqs-123",
    )
    assert line["level"] == "INFO" and line["logger"] == "events.consuming.runtime"


def test_secrets_are_scrubbed(json_log):
    log = logging.getLogger("events.test")
    log.warning("calling with Authorization: Bearer abcdefghijklmnop and aws_secret_access_key=wJalrXUtnFEMI")
    log.warning("connecting to %s", "postgres://billing:hunter2@db:5432/billing")
    out = json_log.getvalue()
    assert "abcdefghijklmnop" not in out and "wJalrXUtnFEMI" not in out and "hunter2" not in out
    assert "[redacted]" in out
