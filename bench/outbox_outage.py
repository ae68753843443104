"""SNS unreachable for the whole write phase: every change commits; afterwards every event goes out.

1. Point the AWS endpoint at a closed port. Run 10,000 domain transactions
   (each a row + its event) while the relay keeps trying and failing.
2. Point it back. Run the sweep until the outbox is empty, while a drainer
   counts distinct event ids arriving on the subscribed queue.
Pass: 10,000 commits, 10,000 distinct events received, 0 unpublished, 0 lost.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid

import _env
from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from devsupport.net import free_port
from events import contracts, topology
from events.models import Heartbeat, OutboxEvent
from events.publishing import record_event
from events.publishing.relay import relay_pending
from events.topology import aws

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
DATA = _env.AGREEMENT_DATA
# How fast the relay catches up, not how fast the drainers read: not held (holding.py).
settings.OUTBOX_RELAY_HOLD_DEPTH = 0


def change(i: int) -> None:
    with transaction.atomic():
        hb = Heartbeat.objects.create(name=f"outage-{i}-{uuid.uuid4().hex[:6]}", beat_at=timezone.now())
        record_event(
            sender=Heartbeat,
            type=contracts.AGREEMENT_CREATED,
            aggregate_id=hb.name,
            aggregate_version=1,
            data={**DATA, "agreement_id": hb.name},
        )


def main() -> None:
    OutboxEvent.objects.all().delete()
    Heartbeat.objects.filter(name__startswith="outage-").delete()
    real = settings.AWS_ENDPOINT_URL
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    settings.AWS_MAX_ATTEMPTS = 1
    aws.reset_clients()

    start = time.perf_counter()
    failed_attempts = 0
    for i in range(N):
        change(i)
        if i % 1000 == 999:  # the relay keeps trying during the outage
            OutboxEvent.objects.update(next_attempt_at=Now())
            failed_attempts += relay_pending(max_seconds=1, limit=200).failed
    write_s = time.perf_counter() - start
    committed = Heartbeat.objects.filter(name__startswith="outage-").count()
    unpublished = OutboxEvent.objects.filter(published_at__isnull=True).count()
    with_error = OutboxEvent.objects.exclude(last_error="").count()

    settings.AWS_ENDPOINT_URL = real
    aws.reset_clients()
    seen: set[str] = set()
    stop = threading.Event()

    def drainer() -> None:
        sqs = aws.client("sqs")
        url = aws.queue_url(topology.event_queue_name("invoicing"))
        while not stop.is_set() or len(seen) < N:
            msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            )
            if not msgs:
                if stop.is_set():
                    return
                continue
            seen.update(json.loads(m["Body"])["id"] for m in msgs)
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(msgs)],
            )

    threads = [threading.Thread(target=drainer) for _ in range(2)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    OutboxEvent.objects.update(next_attempt_at=Now())  # the outage is over: due now
    while OutboxEvent.objects.filter(published_at__isnull=True).exists():
        relay_pending(max_seconds=600)
    publish_s = time.perf_counter() - start
    stop.set()
    for t in threads:
        t.join(timeout=120)
    ids = {str(i) for i in OutboxEvent.objects.values_list("id", flat=True)}
    _env.report(
        [
            ("domain changes committed during outage", f"{committed} of {N} in {write_s:.1f} s"),
            ("relay attempts failed during outage", str(failed_attempts)),
            ("rows unpublished with an error recorded", f"{unpublished} ({with_error} with last_error)"),
            ("published after the endpoint returned", f"{N} in {publish_s:.1f} s"),
            ("distinct events received by the subscriber", str(len(seen & ids))),
            ("lost", str(len(ids - seen))),
        ]
    )
    assert committed == N and len(ids - seen) == 0
    OutboxEvent.objects.all().delete()
    Heartbeat.objects.filter(name__startswith="outage-").delete()


if __name__ == "__main__":
    main()
