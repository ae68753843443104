"""The fault "queued messages lost": a consumer's queue loses every message while events wait
unhandled in it. Only the delivery audit (events/audit/) can bring them back."""

from __future__ import annotations

import time
from datetime import datetime

from devsupport.waiting import wait_until

from .faults import Duplicator


class QueueLoss:
    """Every message queued for a consumer is lost (a purge; an endpoint restarted without its
    state; a queue deleted and recreated) while events of the daily run wait unhandled in it.
    Their duplicates are not sent either (they would deliver them): the delivery audit must find
    them and re-send them, and the invariants must still hold. For a backlog to exist at all, the
    run's messages are held first (the queue's DelaySeconds, as a slow consumer would leave them)."""

    KIND = "queued messages lost (a consumer queue purged mid-run)"
    HOLD_SECONDS = 120

    def __init__(self, consumer: str = "payments") -> None:
        self.consumer = consumer
        self.lost = 0

    def _set_delay(self, seconds: int) -> None:
        from events import topology
        from events.topology import aws

        url = aws.queue_url(topology.event_queue_name(self.consumer))
        aws.client("sqs").set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": str(seconds)})

    def hold(self) -> None:
        """Messages arriving from now on wait in the queue (until ``strike``)."""
        self._set_delay(self.HOLD_SECONDS)

    def _unhandled(self, since: datetime) -> list[str]:
        from events.audit.subscriptions import plan
        from events.models import ConsumerFailure, OutboxEvent, ProcessedEvent

        done = ProcessedEvent.objects.filter(consumer=self.consumer).values("event_id")
        failed = set(
            ConsumerFailure.objects.filter(consumer=self.consumer).values_list("event_id", flat=True)
        )
        pending = OutboxEvent.objects.filter(
            published_at__gte=since, type__in=plan(self.consumer).types
        ).exclude(id__in=done)
        return [str(i) for i in pending.values_list("id", flat=True) if str(i) not in failed]

    def strike(self, since: datetime, duplicator: Duplicator, timeout: float = 30) -> int:
        """Once events published since ``since`` wait unhandled, purge the consumer's queue and let
        it flow again. Returns how many were lost: unhandled then, and still a few seconds later
        (what a consumer had already received is handled; 0: nothing lost, try another day)."""
        from events import topology
        from events.topology import aws

        try:
            try:
                wait_until(lambda: self._unhandled(since), timeout, "events unhandled", interval=0.1)
            except TimeoutError:
                return 0
            time.sleep(2)  # more of the run's events reach the queue
            aws.client("sqs").purge_queue(QueueUrl=aws.queue_url(topology.event_queue_name(self.consumer)))
        finally:
            self._set_delay(0)
        queued = self._unhandled(since)
        duplicator.done.update(queued)  # their copies would deliver them: only the audit may
        time.sleep(3)
        lost = set(queued) & set(self._unhandled(since))
        self.lost += len(lost)
        return len(lost)
