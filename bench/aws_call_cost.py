"""The client's CPU per SQS/SNS call: what botocore costs the workers, apart from the endpoint.

    cd bench && ../.venv/bin/python aws_call_cost.py [CALLS]      # default 400 per measurement

The pipeline's workers make about a quarter of a PublishBatch, a ReceiveMessage and a
DeleteMessageBatch call per agreement, each full (10 entries; README, "Local SNS/SQS endpoint"), and
py-spy puts botocore's calls at 60% of their Python time through the projection. This measures two
of those calls as the project makes them (events.topology.aws's client): a ReceiveMessage that
returns 10 messages (with their attributes; they stay visible, so every call returns them) and a
PublishBatch of 10 relay-built events (bodies, attributes, signatures). Baselines, same run, same
endpoint: the same request signed by botocore's SigV4 signer and sent with urllib3 directly, the
answer parsed by orjson or ElementTree (what a hand-built client of these calls would spend), and
the same request unsigned (HTTP alone). Prints this process's CPU per call for each, alternating
rounds, and the project client's share that is not the bare call's: the most a lighter client
could save.
"""

from __future__ import annotations

import resource
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from typing import Any

import _env
import botocore.auth
import botocore.awsrequest
import orjson
import urllib3
from django.utils import timezone

from events import contracts
from events.publishing.outbox import NewEvent, build_row
from events.publishing.sns import message_attributes
from events.topology import aws
from events.topology.direct import DirectCalls, credentials_for

CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 400
ROUNDS = 3


def cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def per_call(fn: Callable[[], Any]) -> float:
    """Microseconds of this process's CPU per call of ``fn`` (after one untimed call)."""
    fn()
    start = cpu()
    for _ in range(CALLS):
        fn()
    return 1e6 * (cpu() - start) / CALLS


def main() -> None:
    sqs, sns = aws.client("sqs"), aws.client("sns")
    direct_sqs, direct_sns = (
        DirectCalls(sqs, credentials_for(sqs.meta.endpoint_url)),
        DirectCalls(sns, credentials_for(sns.meta.endpoint_url)),
    )
    endpoint = sqs.meta.endpoint_url + "/"
    region = sqs.meta.region_name
    queue = sqs.create_queue(QueueName="bench-call-cost")["QueueUrl"]
    topic = sns.create_topic(Name="bench-call-cost")["TopicArn"]
    rows = [
        build_row(
            NewEvent(contracts.AGREEMENT_CREATED, f"CC-{i}", 1, dict(_env.AGREEMENT_DATA)), timezone.now()
        )
        for i in range(10)
    ]
    entries = [
        {"Id": str(i), "Message": r.message_body(), "MessageAttributes": message_attributes(r)}
        for i, r in enumerate(rows)
    ]
    sqs.send_message_batch(
        QueueUrl=queue,
        Entries=[
            {"Id": e["Id"], "MessageBody": e["Message"], "MessageAttributes": e["MessageAttributes"]}
            for e in entries
        ],
    )
    credentials = sqs._request_signer._credentials.get_frozen_credentials()
    pool = urllib3.PoolManager()

    receive_args = {
        "QueueUrl": queue,
        "MaxNumberOfMessages": 10,
        "WaitTimeSeconds": 0,
        "VisibilityTimeout": 0,
    }
    receive_args_all = {**receive_args, "MessageAttributeNames": ["All"]}
    receive_body = orjson.dumps(receive_args_all)
    receive_headers = {
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": "AmazonSQS.ReceiveMessage",
    }

    def project_receive() -> None:
        got = sqs.receive_message(**receive_args_all)["Messages"]
        assert len(got) == 10, len(got)

    def direct_receive() -> None:
        got = direct_sqs.receive_message(**receive_args_all)["Messages"]
        assert len(got) == 10, len(got)

    def bare(service: str, body: bytes | str, headers: dict[str, str], signed: bool) -> bytes:
        if signed:
            request = botocore.awsrequest.AWSRequest("POST", endpoint, data=body, headers=headers)
            botocore.auth.SigV4Auth(credentials, service, region).add_auth(request)
            headers = dict(request.headers.items())
        return pool.request("POST", endpoint, body=body, headers=headers).data

    def bare_receive(signed: bool) -> Callable[[], None]:
        def call() -> None:
            got = orjson.loads(bare("sqs", receive_body, receive_headers, signed))["Messages"]
            assert len(got) == 10, len(got)

        return call

    form = {"Action": "PublishBatch", "Version": "2010-03-31", "TopicArn": topic}
    for i, e in enumerate(entries, 1):
        member = f"PublishBatchRequestEntries.member.{i}"
        form[f"{member}.Id"], form[f"{member}.Message"] = e["Id"], e["Message"]
        for j, (name, value) in enumerate(e["MessageAttributes"].items(), 1):
            attribute = f"{member}.MessageAttributes.entry.{j}"
            form[f"{attribute}.Name"] = name
            form[f"{attribute}.Value.DataType"] = value["DataType"]
            form[f"{attribute}.Value.StringValue"] = value["StringValue"]
    publish_headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}

    def project_publish() -> None:
        ok = sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)["Successful"]
        assert len(ok) == 10, ok

    def direct_publish() -> None:
        ok = direct_sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)["Successful"]
        assert len(ok) == 10, ok

    def bare_publish(signed: bool) -> Callable[[], None]:
        def call() -> None:
            answer = ElementTree.fromstring(bare("sns", aws.form_encode(form), publish_headers, signed))
            ok = [e for e in answer.iter() if e.tag.endswith("MessageId")]
            assert len(ok) == 10, ElementTree.tostring(answer)[:300]

        return call

    measured: dict[str, list[float]] = {}
    kinds = {
        "ReceiveMessage (10 messages), botocore's client": project_receive,
        "  the same receive, the project's direct call": direct_receive,
        "  the same receive, signed, urllib3, orjson": bare_receive(True),
        "  the same receive, unsigned (HTTP alone)": bare_receive(False),
        "PublishBatch (10 events), botocore's client": project_publish,
        "  the same publish, the project's direct call": direct_publish,
        "  the same publish, signed, urllib3, ElementTree": bare_publish(True),
        "  the same publish, unsigned (HTTP alone)": bare_publish(False),
    }
    for _ in range(ROUNDS):
        for name, fn in kinds.items():
            measured.setdefault(name, []).append(per_call(fn))
    sqs.delete_queue(QueueUrl=queue)
    sns.delete_topic(TopicArn=topic)
    best = {name: min(values) for name, values in measured.items()}
    names = list(kinds)
    lines = [
        (f"{name}", f"{best[name]:6,.0f} us of CPU per call (best of {ROUNDS} x {CALLS})") for name in names
    ]
    for project, direct, signed in ((names[0], names[1], names[2]), (names[4], names[5], names[6])):
        call = project.split(" (")[0]
        share = 1 - best[signed] / best[project]
        lines.append((f"{call}: botocore's beyond a bare signed call", f"{share:.0%} of its CPU"))
        lines.append((f"{call}: the direct call", f"{best[direct] / best[project]:.0%} of botocore's CPU"))
    _env.report(lines)


if __name__ == "__main__":
    main()
