"""Relay throughput vs a plain boto3 PublishBatch loop (target: >= 90%).

Same endpoint (ministack unless ``BENCH_EMULATOR=moto``), same run, same messages, same
concurrency (``OUTBOX_RELAY_PUBLISH_CONCURRENCY`` calls in flight in both). The subscribed
queue is drained during and purged between runs: neither emulator is flat at depth.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import _env
from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now

from events import contracts, topology
from events.models import OutboxEvent
from events.publishing import NewEvent, record_events
from events.publishing.relay import relay_pending
from events.publishing.sns import message_attributes
from events.topology import aws

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 5  # alternating pairs; the best of each side counts
# The relay against a plain loop that never waits: not held for the subscribed queue's depth
# (events/publishing/holding.py, on in settings.dev), which the drainer's pace would decide.
settings.OUTBOX_RELAY_HOLD_DEPTH = 0
DATA = _env.AGREEMENT_DATA


class Drainer:
    """Empties the subscribed queue while a run publishes: moto slows down on deep queues."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(2)]
        self.received = 0

    def __enter__(self) -> Drainer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def run(self) -> None:
        sqs = aws.client("sqs")
        url = aws.queue_url(topology.event_queue_name("invoicing"))
        while True:
            msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            )
            if not msgs:
                if self.stop.is_set():
                    return
                continue
            self.received += len(msgs)
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(msgs)],
            )


def purge() -> None:
    sqs = aws.client("sqs")
    for q in topology.build().queues:
        sqs.purge_queue(QueueUrl=aws.queue_url(q.name))


def plain_loop(rows: list[OutboxEvent]) -> None:
    """PublishBatch of 10, as many calls in flight as the relay has; nothing read or written."""
    sns = aws.client("sns")
    arn = aws.topic_arn(topology.topic_name("agreements"))

    def publish(chunk: list[OutboxEvent]) -> None:
        sns.publish_batch(
            TopicArn=arn,
            PublishBatchRequestEntries=[
                {"Id": str(j), "Message": r.message_body(), "MessageAttributes": message_attributes(r)}
                for j, r in enumerate(chunk)
            ],
        )

    with ThreadPoolExecutor(settings.OUTBOX_RELAY_PUBLISH_CONCURRENCY) as pool:
        list(pool.map(publish, [rows[i : i + 10] for i in range(0, len(rows), 10)]))


def relay() -> None:
    result = relay_pending(max_seconds=3600)
    assert result.published == N and result.failed == 0, result


def main() -> None:
    OutboxEvent.objects.all().delete()
    with transaction.atomic():
        record_events(
            sender=None,
            events=[
                NewEvent(contracts.AGREEMENT_CREATED, f"T-{i}", 1, {**DATA, "agreement_id": f"T-{i}"})
                for i in range(N)
            ],
        )
    rows = list(OutboxEvent.objects.order_by("occurred_at"))
    base_runs, relay_runs = [], []
    for _ in range(RUNS):
        purge()
        with Drainer():
            base_runs.append(_env.timed(lambda: plain_loop(rows)))
        purge()
        OutboxEvent.objects.update(published_at=None, attempts=0, next_attempt_at=Now())
        with Drainer():
            relay_runs.append(_env.timed(relay))
    purge()
    b, r = min(base_runs), min(relay_runs)
    _env.report(
        [
            ("events", str(N)),
            ("PublishBatch calls in flight", str(settings.OUTBOX_RELAY_PUBLISH_CONCURRENCY)),
            ("plain boto3 PublishBatch loop", f"{b:.2f} s  ({N / b:.0f} events/s)"),
            ("outbox relay (claim, publish, mark)", f"{r:.2f} s  ({N / r:.0f} events/s)"),
            ("relay / plain throughput", f"{b / r:.0%} (target >= 90%)"),
        ]
    )
    OutboxEvent.objects.all().delete()


if __name__ == "__main__":
    main()
