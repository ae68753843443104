"""Push consumer: throughput vs a plain boto3 loop (target >= 80%) and publish-to-handled latency.

1. Throughput: the same N messages are put on a queue twice. Baseline: a plain
   receive(10) + delete_message_batch loop. Then our push consumer (the one the
   worker runs), whose handler writes its processed-event record in PostgreSQL.
2. Latency: events published one by one to the SNS topic at a modest rate;
   each handler notes now - published_at. Prints p50 and p99 (targets 200 ms, 1 s).
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

import _env
from django.conf import settings

from events import topology
from events.consuming import Event, handles
from events.consuming.config import consumer_configs
from events.consuming.push import PushConsumer
from events.models import ProcessedEvent
from events.signing import signed_attributes
from events.topology import AGREEMENTS, EventQueue, aws
from events.topology.provisioning import provision

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
LATENCY_EVENTS = 200
settings.EXTRA_EVENT_QUEUES = [EventQueue("bench", {AGREEMENTS: ("agreement.created",)})]
# The consumer's own latency: make run's gathering (gather_seconds 0.2) would add up to 0.2 s to
# each message of the ~20/s trickle below (README, "Push or pull per consumer").
settings.EVENT_CONSUMERS = {"bench": {"gather_seconds": 0}}
provision(topology.build())
QUEUE = topology.event_queue_name("bench")
latencies: list[float] = []
measure = threading.Event()


@handles("agreement.created", consumer="bench")
def bench_handler(event: Event) -> None:
    if measure.is_set():
        latencies.append(time.time() - event.occurred_at.timestamp())


def body(i: int, occurred: str = "2026-11-27T10:00:00Z") -> str:
    return json.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": "agreement.created",
            "schema_version": 2,
            "occurred_at": occurred,
            "producer": "agreements",
            "aggregate_type": "agreement",
            "aggregate_id": f"B-{i}",
            "aggregate_version": 1,
            "data": {
                "agreement_id": f"B-{i}",
                "external_ref": f"SUB-{i}",
                "customer": {"external_ref": "C", "name": "Ada", "email": "a@b.co"},
                "description": "",
                "amount_minor": 100,
                "currency": "EUR",
                "interval": "month",
                "interval_count": 1,
                "start_date": "2026-01-01",
                "end_date": None,
                "status": "active",
            },
        }
    )


def fill() -> None:
    sqs = aws.client("sqs")
    url = aws.queue_url(QUEUE)
    sqs.purge_queue(QueueUrl=url)
    for i in range(0, N, 10):
        bodies = [body(i + j) for j in range(10)]  # each signed over exactly what is sent
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {
                    "Id": str(j),
                    "MessageBody": text,
                    "MessageAttributes": {
                        "event_type": {"DataType": "String", "StringValue": "agreement.created"},
                        **signed_attributes(text),
                    },
                }
                for j, text in enumerate(bodies)
            ],
        )


def plain_loop() -> None:
    _env.plain_receive_delete(aws.queue_url(QUEUE), N)


def push_consumer() -> PushConsumer:
    consumer = PushConsumer(consumer_configs()["bench"])
    consumer.start()
    while consumer.handled < N:  # handled = settled: processed and deleted
        time.sleep(0.01)
    return consumer  # stopped by the caller, outside the timing (stop waits for a long poll)


def main() -> None:
    base, push = [], []
    for _ in range(2):
        fill()
        base.append(_env.timed(plain_loop))
        ProcessedEvent.objects.filter(consumer="bench").delete()
        fill()
        start = time.perf_counter()
        consumer = push_consumer()
        push.append(time.perf_counter() - start)
        consumer.stop()
    b, p = min(base), min(push)
    assert ProcessedEvent.objects.filter(consumer="bench").count() == N

    # latency: publish to the topic one at a time, ~20 per second, consumer running
    consumer = PushConsumer(consumer_configs()["bench"])
    consumer.start()
    measure.set()
    sns = aws.client("sns")
    arn = aws.topic_arn(topology.topic_name(AGREEMENTS))
    for i in range(LATENCY_EVENTS):
        occurred = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        message = body(N + i, occurred)
        sns.publish(
            TopicArn=arn,
            Message=message,
            MessageAttributes={
                "event_type": {"DataType": "String", "StringValue": "agreement.created"},
                **signed_attributes(message),
            },
        )
        time.sleep(0.05)
    deadline = time.time() + 30
    while len(latencies) < LATENCY_EVENTS and time.time() < deadline:
        time.sleep(0.05)
    consumer.stop()
    q = statistics.quantiles(latencies, n=100)
    _env.report(
        [
            ("messages", str(N)),
            ("plain receive(10)+delete_batch loop", f"{b:.2f} s ({N / b:.0f} msg/s)"),
            ("push consumer (handler + processed-event row)", f"{p:.2f} s ({N / p:.0f} msg/s)"),
            ("push / plain throughput", f"{b / p:.0%} (target >= 80%)"),
            ("latency events", f"{len(latencies)} of {LATENCY_EVENTS}"),
            ("publish-to-handled p50", f"{q[49] * 1000:.0f} ms (target < 200 ms)"),
            ("publish-to-handled p99", f"{q[98] * 1000:.0f} ms (target < 1000 ms)"),
        ]
    )
    ProcessedEvent.objects.filter(consumer="bench").delete()


if __name__ == "__main__":
    main()
