"""The client's CPU per SQS/SNS call: what botocore costs the workers, apart from the endpoint.

    cd bench && ../.venv/bin/python aws_call_cost.py [CALLS]      # default 400 per measurement

The pipeline's workers make about a quarter of a PublishBatch, a ReceiveMessage and a
DeleteMessageBatch call per agreement, each full (10 entries; README, "Local SNS/SQS endpoint"), and
py-spy puts botocore's calls at 60% of their Python time through the projection. This measures two
of those calls as the project makes them (events.topology.aws's client): a ReceiveMessage that
returns 10 messages (with their attributes; they stay visible, so every call returns them) and a
PublishBatch of 10 relay-built events (bodies, attributes, signatures), each by botocore's client
and by the project's direct calls (events/topology/direct.py, which the consumers and the relay
use on a local endpoint). Baseline, same run, same endpoint: the same request, unsigned, sent with
urllib3 and its answer parsed by orjson or ElementTree (HTTP alone). Prints this process's CPU per
call for each, alternating rounds, and each client's as a share of botocore's.
"""

from __future__ import annotations

import resource
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from typing import Any

import _env
import orjson
import urllib3
from django.utils import timezone

from events import contracts
from events.publishing.outbox import NewEvent, build_row
from events.publishing.sns import message_attributes
from events.topology import aws
from events.topology.direct import DirectCalls, credentials_for, publish_batch_form, sqs_headers
from events.topology.forms import form_encode

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
    pool = urllib3.PoolManager()

    receive_args_all = {
        "QueueUrl": queue,
        "MaxNumberOfMessages": 10,
        "WaitTimeSeconds": 0,
        "VisibilityTimeout": 0,
        "MessageAttributeNames": ["All"],
    }
    receive_body = orjson.dumps(receive_args_all)
    receive_headers = sqs_headers("ReceiveMessage")

    def project_receive() -> None:
        got = sqs.receive_message(**receive_args_all)["Messages"]
        assert len(got) == 10, len(got)

    def direct_receive() -> None:
        got = direct_sqs.receive_message(**receive_args_all)["Messages"]
        assert len(got) == 10, len(got)

    def unsigned(body: bytes | str, headers: dict[str, str]) -> bytes:
        return pool.request("POST", endpoint, body=body, headers=headers).data

    def unsigned_receive() -> None:
        got = orjson.loads(unsigned(receive_body, receive_headers))["Messages"]
        assert len(got) == 10, len(got)

    publish_params = {"TopicArn": topic, "PublishBatchRequestEntries": entries}
    publish_headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}

    def project_publish() -> None:
        ok = sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)["Successful"]
        assert len(ok) == 10, ok

    def direct_publish() -> None:
        ok = direct_sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)["Successful"]
        assert len(ok) == 10, ok

    def unsigned_publish() -> None:
        body = form_encode(publish_batch_form(publish_params))  # built each call, as any client does
        answer = ElementTree.fromstring(unsigned(body, publish_headers))
        ok = [e for e in answer.iter() if e.tag.endswith("MessageId")]
        assert len(ok) == 10, ElementTree.tostring(answer)[:300]

    measured: dict[str, list[float]] = {}
    kinds = {
        "ReceiveMessage (10 messages), botocore's client": project_receive,
        "  the same receive, the project's direct call": direct_receive,
        "  the same receive, unsigned (HTTP alone)": unsigned_receive,
        "PublishBatch (10 events), botocore's client": project_publish,
        "  the same publish, the project's direct call": direct_publish,
        "  the same publish, unsigned (HTTP alone)": unsigned_publish,
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
    for project, direct, alone in ((names[0], names[1], names[2]), (names[3], names[4], names[5])):
        call = project.split(" (")[0]
        lines.append((f"{call}: the direct call", f"{best[direct] / best[project]:.0%} of botocore's CPU"))
        lines.append((f"{call}: HTTP alone", f"{best[alone] / best[project]:.0%} of botocore's CPU"))
    _env.report(lines)


if __name__ == "__main__":
    main()
