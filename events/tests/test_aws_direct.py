"""The hot calls sent without botocore's pipeline (events/topology/direct.py): they answer what
botocore's client answers, on the real endpoint over HTTP; anything but a plain success is
botocore's to send, with its errors; what is sent is signed as sent; real AWS keeps botocore."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.parsers import ResponseParserError

from devsupport.net import free_port
from events import topology
from events.signing import signed_attributes
from events.tests.test_aws_client import HOSTILE, publish_entries
from events.topology import aws
from events.topology.direct import TURN_OFF_AFTER, DirectCalls
from tests.factories import drain

QUEUE = "invoicing"
# what SQS takes in a message body (no control characters but tab, newline and carriage return)
BODIES = [f"{i} {t}" for i, t in enumerate(HOSTILE) if "\x01" not in t]


def without_metadata(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "ResponseMetadata"}


@pytest.fixture(autouse=True)
def fresh_calls(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Each test's own DirectCalls (what an earlier one's fallbacks logged or turned off is not
    carried over), and the fallbacks it logs, at every level."""
    aws.reset_clients()
    with caplog.at_level(logging.DEBUG, logger="events.topology.direct"):
        yield
    aws.reset_clients()


def fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "sent through botocore" in r.getMessage()]


def test_the_hot_calls_are_direct_on_a_local_endpoint_and_botocores_against_aws(settings: Any):
    assert settings.AWS_ENDPOINT_URL and isinstance(aws.calls("sqs"), DirectCalls)
    settings.AWS_DIRECT_CALLS = False
    assert aws.calls("sqs") is aws.client("sqs") and aws.calls("sns") is aws.client("sns")
    settings.AWS_DIRECT_CALLS = None
    settings.AWS_ENDPOINT_URL = None  # real AWS: botocore makes every call unless it is set
    assert aws.calls("sqs") is aws.client("sqs")
    settings.AWS_DIRECT_CALLS = True
    assert isinstance(aws.calls("sns"), DirectCalls)


def test_a_receive_and_a_delete_answer_what_botocore_answers(
    empty_queues: Any, sqs: Any, caplog: pytest.LogCaptureFixture
):
    # given messages with text and binary attributes on a consumer's queue
    url = aws.queue_url(topology.event_queue_name(QUEUE))
    sent = sqs.send_message_batch(
        QueueUrl=url,
        Entries=[
            {
                "Id": str(i),
                "MessageBody": body,
                "MessageAttributes": {
                    **signed_attributes(body),
                    "raw": {"DataType": "Binary", "BinaryValue": f"\x00\xff{i}".encode("latin-1")},
                },
            }
            for i, body in enumerate(BODIES)
        ],
    )
    assert not sent.get("Failed"), sent
    args = {
        "QueueUrl": url,
        "MaxNumberOfMessages": 10,
        "WaitTimeSeconds": 1,
        "VisibilityTimeout": 0,
        "MessageAttributeNames": ["All"],
        "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
    }
    direct = aws.calls("sqs")
    # when both receive them (they stay visible: VisibilityTimeout 0)
    ours: dict[str, Any] = {}
    theirs: dict[str, Any] = {}
    for _ in range(20):  # a receive may bring some of them
        ours.update({m["MessageId"]: m for m in direct.receive_message(**args).get("Messages", [])})
        theirs.update({m["MessageId"]: m for m in sqs.receive_message(**args).get("Messages", [])})
        if len(ours) == len(theirs) == len(BODIES):
            break
    assert len(ours) == len(BODIES) and sorted(m["Body"] for m in ours.values()) == sorted(BODIES)

    # then the messages are the same, binary values decoded, but for each receive's own handle and count
    def same(m: dict[str, Any]) -> dict[str, Any]:
        attributes = {k: v for k, v in m["Attributes"].items() if k != "ApproximateReceiveCount"}
        return {**m, "ReceiptHandle": None, "Attributes": attributes}

    assert {k: same(m) for k, m in ours.items()} == {k: same(m) for k, m in theirs.items()}
    assert {m["MessageAttributes"]["raw"]["BinaryValue"][:2] for m in ours.values()} == {b"\x00\xff"}
    # and a delete batch of three messages' latest handles and one that is not a handle answers as
    # botocore's answers (the endpoint takes only a message's latest handle)
    held = direct.receive_message(**{**args, "VisibilityTimeout": 60, "MaxNumberOfMessages": 3})["Messages"]
    handles = [m["ReceiptHandle"] for m in held] + ["not-a-receipt-handle"]
    entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(handles)]
    mine = without_metadata(direct.delete_message_batch(QueueUrl=url, Entries=entries))
    again = without_metadata(sqs.delete_message_batch(QueueUrl=url, Entries=entries[len(held) :]))
    assert sorted(e["Id"] for e in mine["Successful"]) == [str(i) for i in range(len(held))]
    assert mine["Failed"] == again["Failed"] and len(mine["Failed"]) == 1
    assert mine["Failed"][0]["Code"] and mine["Failed"][0]["SenderFault"] is True
    left = {m["MessageId"] for m in drain(sqs, topology.event_queue_name(QUEUE))}
    assert left == set(ours) - {m["MessageId"] for m in held}
    assert fallbacks(caplog) == []  # every call above was the direct one


def test_a_publish_batch_arrives_exactly_and_answers_what_botocore_answers(
    empty_queues: Any, sns: Any, caplog: pytest.LogCaptureFixture
):
    # given hostile bodies with their signatures, published as the relay publishes them
    bodies = [f'{{"i": {i}, "text": {t!r}}}' for i, t in enumerate(HOSTILE)]  # as repr: SQS takes them
    entries = publish_entries(bodies)
    arn = aws.topic_arn(topology.topic_name("agreements"))
    mine = without_metadata(aws.calls("sns").publish_batch(TopicArn=arn, PublishBatchRequestEntries=entries))
    theirs = without_metadata(sns.publish_batch(TopicArn=arn, PublishBatchRequestEntries=entries))
    # then both answers name every entry, with a message id each, and no failure
    for answer in (mine, theirs):
        assert sorted(e["Id"] for e in answer["Successful"]) == sorted(e["Id"] for e in entries)
        assert all(e["MessageId"] for e in answer["Successful"]) and not answer.get("Failed")
    assert set(mine) == {"Successful", "Failed"} and set(theirs) <= set(mine)
    assert fallbacks(caplog) == []  # the direct call made it
    # and the subscribed queue holds every body twice, each with its signature as sent
    got = drain(aws.client("sqs"), topology.event_queue_name(QUEUE))
    assert sorted(m["Body"] for m in got) == sorted(bodies * 2)
    for m in got:
        signed = signed_attributes(m["Body"])
        assert {k: m["MessageAttributes"][k]["StringValue"] for k in signed} == {
            k: v["StringValue"] for k, v in signed.items()
        }


def test_an_error_answer_is_botocores_to_send_with_its_errors(
    provisioned: Any, caplog: pytest.LogCaptureFixture
):
    direct, sqs = aws.calls("sqs"), aws.client("sqs")
    missing = aws.queue_url(topology.event_queue_name(QUEUE)).rsplit("/", 1)[0] + "/no-such-queue"
    # an unknown queue: botocore's own ClientError, with its code, as a botocore call raises it
    codes = []
    for client in (direct, sqs):
        with pytest.raises(ClientError) as raised:
            client.receive_message(QueueUrl=missing, WaitTimeSeconds=0)
        codes.append(raised.value.response["Error"]["Code"])
    assert codes[0] == codes[1] and codes[0]
    # and an answer any client gets is no warning: the caller has botocore's error to say it
    (fell,) = [r for r in caplog.records if "sent through botocore" in r.getMessage()]
    assert fell.levelno == logging.DEBUG and "HTTP 400" in fell.getMessage()


def test_a_down_endpoint_is_botocores_unreachable(settings: Any, caplog: pytest.LogCaptureFixture):
    # given an endpoint that does not answer
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    settings.AWS_MAX_ATTEMPTS = 1
    # then a call raises botocore's EndpointConnectionError (what the relay and the pollers take
    # for "unreachable"), after its retries, each time
    for _ in range(2):
        with pytest.raises(EndpointConnectionError):
            aws.calls("sns").publish_batch(
                TopicArn="arn:aws:sns:us-east-1:000000000000:t",
                PublishBatchRequestEntries=[{"Id": "0", "Message": "m"}],
            )
    # and the first fallback of a kind in a process is a warning, the next ones are not
    fell = [r for r in caplog.records if "PublishBatch sent through botocore" in r.getMessage()]
    assert [r.levelno for r in fell] == [logging.WARNING, logging.DEBUG]


class Capture(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[dict[str, str], bytes]] = []
    answer = b"{}"
    status = 200

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Capture.seen.append((dict(self.headers.items()), body))
        self.send_response(Capture.status)
        self.send_header("Content-Length", str(len(Capture.answer)))
        self.end_headers()
        self.wfile.write(Capture.answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def capture(settings: Any) -> Iterator[str]:
    """A server that records each request and answers ``Capture.status`` and ``Capture.answer``
    (200, ``{}``), as the endpoint for new clients."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Capture.seen.clear()
    Capture.answer, Capture.status = b"{}", 200
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{server.server_port}"
    settings.AWS_MAX_ATTEMPTS = 1
    yield settings.AWS_ENDPOINT_URL
    server.shutdown()
    Capture.answer, Capture.status = b"{}", 200


PUBLISHED = (
    b'<PublishBatchResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><PublishBatchResult>'
    b"<Successful><member><Id>0</Id><MessageId>m-1</MessageId></member></Successful>"
    b"<Failed><member><Id>1</Id><Code>InvalidParameter</Code><Message>too big</Message>"
    b"<SenderFault>true</SenderFault></member></Failed>"
    b"</PublishBatchResult></PublishBatchResponse>"
)


def signature_checks(headers: dict[str, str], body: bytes, endpoint: str, service: str, region: str) -> bool:
    """Recompute the request's SigV4 signature as AWS does: over the headers it names as signed,
    as received (the Host among them), and the body received."""
    authorization = headers["Authorization"]
    fields = dict(part.strip().split("=", 1) for part in authorization.split(" ", 1)[1].split(","))
    signed = fields["SignedHeaders"].split(";")
    assert "host" in signed and "x-amz-date" in signed
    request = botocore.awsrequest.AWSRequest(
        "POST",
        endpoint + "/",
        data=body,
        headers={k: v for k, v in headers.items() if k.lower() in signed},
    )
    request.context["timestamp"] = headers["X-Amz-Date"]
    signer = botocore.auth.SigV4Auth(botocore.credentials.Credentials("testing", "testing"), service, region)
    string_to_sign = signer.string_to_sign(request, signer.canonical_request(request))
    return signer.signature(string_to_sign, request) == fields["Signature"]


def test_what_is_sent_is_what_was_signed(capture: str, settings: Any):
    # when each hot call is made to an endpoint on a port of its own
    sqs, sns = aws.calls("sqs"), aws.calls("sns")
    sqs.receive_message(QueueUrl=f"{capture}/000000000000/q", MaxNumberOfMessages=10, WaitTimeSeconds=0)
    Capture.answer = PUBLISHED
    answer = sns.publish_batch(
        TopicArn="arn:aws:sns:us-east-1:000000000000:t",
        PublishBatchRequestEntries=[
            {"Id": "0", "Message": HOSTILE[3], "MessageAttributes": signed_attributes(HOSTILE[3])}
        ],
    )
    # then each request's signature covers the host, headers and body as received
    (receive_headers, receive_body), (publish_headers, publish_body) = Capture.seen
    assert signature_checks(receive_headers, receive_body, capture, "sqs", settings.AWS_REGION)
    assert signature_checks(publish_headers, publish_body, capture, "sns", settings.AWS_REGION)
    # and each is the request botocore would send: SQS's JSON with its target, SNS's form
    assert receive_headers["X-Amz-Target"] == "AmazonSQS.ReceiveMessage"
    assert json.loads(receive_body)["MaxNumberOfMessages"] == 10
    form = dict(urllib.parse.parse_qsl(publish_body.decode(), keep_blank_values=True))
    assert (
        form["Action"] == "PublishBatch" and form["PublishBatchRequestEntries.member.1.Message"] == HOSTILE[3]
    )
    assert answer == {
        "Successful": [{"Id": "0", "MessageId": "m-1"}],
        "Failed": [{"Id": "1", "Code": "InvalidParameter", "Message": "too big", "SenderFault": True}],
    }


def botocores(headers: dict[str, str]) -> bool:
    return "amz-sdk-invocation-id" in {k.lower() for k in headers}


def test_an_answer_that_does_not_parse_is_not_sent_again(capture: str):
    # given an endpoint answering 200 with what is not JSON
    Capture.answer = b"<html>a proxy's page</html>"
    # then the receive raises botocore's parser error, and nothing was sent twice (it was carried out)
    with pytest.raises(ResponseParserError):
        aws.calls("sqs").receive_message(QueueUrl=f"{capture}/000000000000/q", WaitTimeSeconds=0)
    assert len(Capture.seen) == 1 and not botocores(Capture.seen[0][0])


def test_refused_signatures_turn_direct_calls_off_in_the_process(
    capture: str, caplog: pytest.LogCaptureFixture
):
    # given an endpoint that refuses every signature (403), as a misfit endpoint would this path's
    Capture.status, Capture.answer = 403, b'{"__type": "SignatureDoesNotMatch"}'
    sqs = aws.calls("sqs")
    for _ in range(TURN_OFF_AFTER + 2):
        with pytest.raises(ClientError):
            sqs.delete_message_batch(QueueUrl=f"{capture}/0/q", Entries=[{"Id": "0", "ReceiptHandle": "h"}])
    # then each refusal was sent again by botocore until the third in a row turned direct calls off
    sent_by = ["botocore" if botocores(headers) else "direct" for headers, _ in Capture.seen]
    assert sent_by == ["direct", "botocore"] * TURN_OFF_AFTER + ["botocore"] * 2
    assert sqs.off
    # and an operator is told, once, as an error, with the way to say so for good
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert (
        "SQS direct calls turned off" in error.getMessage() and "AWS_DIRECT_CALLS=false" in error.getMessage()
    )
    refusals = [r for r in caplog.records if "sent through botocore" in r.getMessage()]
    assert [r.levelno for r in refusals] == [logging.WARNING] * TURN_OFF_AFTER
