"""A query-protocol (SNS) request body, encoded once before signing: the same text urllib makes, and
what the endpoint decodes back to the very bodies and attributes published."""

from __future__ import annotations

import urllib.parse
from typing import Any

import botocore.awsrequest
import pytest

from events import topology
from events.signing import signed_attributes
from events.topology import aws
from tests.factories import drain

HOSTILE = [
    "",
    "plain",
    "a b+c&d=e%f/g?h#i",
    '{"name": "Zoë \\u0000 <script>", "emoji": "💸", "tab": "\\t"}',
    "line\nbreak\r\nand\ttab",
    "ümlaut ß 中文 ́combining",
    "~-._ unreserved only _.-~",
    "\x7f\x01 controls and ' \" quotes",
]


def publish_entries(bodies: list[str]) -> list[dict[str, Any]]:
    """PublishBatch entries of ``bodies``, each with its signature, as the relay publishes them."""
    return [
        {
            "Id": str(i),
            "Message": body,
            "MessageAttributes": {
                "event_type": {"DataType": "String", "StringValue": "agreement.created"},
                **signed_attributes(body),
            },
        }
        for i, body in enumerate(bodies)
    ]


def botocores_body(params: dict[Any, Any]) -> str:
    """The body botocore itself would send for ``params`` (its preparer, without the handler)."""
    return botocore.awsrequest.AWSRequestPreparer()._prepare_body(botocore.awsrequest.AWSRequest(data=params))


def test_the_form_encoding_is_botocores_own_for_any_text():
    params = {f"Key.{i} {t[:3]}": t for i, t in enumerate(HOSTILE)}
    params["bytes"] = "é €".encode()
    assert aws.form_encode(params) == botocores_body(params)
    assert aws.form_encode({"n": 3}) == botocores_body({"n": 3}) == "n=3"  # not text: urllib's own
    assert aws.form_encode({}) == urllib.parse.urlencode({}) == ""


def test_a_presigned_sns_url_is_still_made_as_botocore_makes_it():
    # the handler leaves presigning alone (its signer reads the body as a dict)
    url = aws.client("sns").generate_presigned_url("list_topics", ExpiresIn=60)
    assert "X-Amz-Signature=" in url and "Action=ListTopics" in url


def test_sns_bodies_are_encoded_once_and_arrive_exactly(monkeypatch: pytest.MonkeyPatch, empty_queues: Any):
    # given hostile message bodies published in one PublishBatch, as the relay publishes
    bodies = [f'{{"i": {i}, "text": {t!r}}}' for i, t in enumerate(HOSTILE) if t]
    sent = {body: signed_attributes(body) for body in bodies}
    encoded: list[Any] = []  # botocore's own form-encoding of a body, each time it reads it
    real_urlencode = botocore.awsrequest.urlencode
    monkeypatch.setattr(
        botocore.awsrequest, "urlencode", lambda *a, **k: encoded.append(a) or real_urlencode(*a, **k)
    )
    sns = aws.client("sns")
    resp = sns.publish_batch(
        TopicArn=aws.topic_arn(topology.topic_name("agreements")),
        PublishBatchRequestEntries=publish_entries(bodies),
    )
    # then botocore did not encode it (twice, with urllib's per-byte quoting): it was encoded once
    assert not resp.get("Failed"), resp
    assert encoded == []
    # and the subscribed queue holds every body and signature exactly as sent
    got = drain(aws.client("sqs"), topology.event_queue_name("invoicing"))
    assert sorted(m["Body"] for m in got) == sorted(bodies)
    for m in got:
        attrs = sent[m["Body"]]
        assert {k: m["MessageAttributes"][k]["StringValue"] for k in attrs} == {
            k: v["StringValue"] for k, v in attrs.items()
        }
