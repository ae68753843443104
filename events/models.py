from __future__ import annotations

import hashlib
from typing import Any

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from . import envelope
from .topology.resources import ALERTS

# The relay publishes what is due in this order, lowest first: alerts never wait behind a backlog
# of domain events (100,000 invoice.issued after a daily run).
PRIORITY_ALERT = 0
PRIORITY_BULK = 1
PRIORITIES = (PRIORITY_ALERT, PRIORITY_BULK)  # the relay claims each in turn


def publish_priority(producer: str) -> int:
    """An event's place in the relay's queue, from its producer: the alerts topic's go first."""
    return PRIORITY_ALERT if producer == ALERTS else PRIORITY_BULK


class OutboxEvent(models.Model):
    """One domain event: the transactional outbox row and, once published, the event store.

    Written in the same transaction as the domain change it describes; the
    relay publishes it to its producer's SNS topic and marks it published.
    Rows are kept for ``EVENT_RETENTION_DAYS`` to answer re-send and history
    queries. The envelope fields never change after the insert.
    """

    id = models.UUIDField(primary_key=True, editable=False)
    type = models.CharField(max_length=100)
    schema_version = models.PositiveSmallIntegerField()
    occurred_at = models.DateTimeField()
    producer = models.CharField(max_length=50)
    aggregate_type = models.CharField(max_length=50)
    aggregate_id = models.CharField(max_length=64)
    aggregate_version = models.BigIntegerField()
    data = models.JSONField()

    # Delivery bookkeeping (auditable: what was published, when, how many attempts).
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    # When the relay may try it (next); set on every unpublished row (the relay claims by it),
    # NULL once published. The database default serves raw inserts.
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_default=Now())
    last_error = models.TextField(blank=True, default="")
    errors = models.JSONField(default=list, blank=True)  # the last few {at, error}
    sns_message_id = models.CharField(max_length=100, blank=True, default="")
    # publish_priority(producer), set on record; the database default serves raw inserts.
    priority = models.PositiveSmallIntegerField(default=PRIORITY_BULK, db_default=PRIORITY_BULK)

    class Meta:
        verbose_name = "event"
        ordering = ["-occurred_at"]
        indexes = [
            # The relay's claim: due rows, alerts first, then each producer's by due time and age
            # (an ordered scan of one producer's unpublished rows, however big the event store and
            # however many rows of a topic the relay's hold keeps back).
            models.Index(
                fields=["priority", "producer", "next_attempt_at", "occurred_at"],
                name="outbox_unpublished",
                condition=Q(published_at__isnull=True),
            ),
            # The oldest unpublished event (monitoring, messaging_status, the Messaging page).
            models.Index(
                fields=["occurred_at"],
                name="outbox_unpublished_age",
                condition=Q(published_at__isnull=True),
            ),
            # Rows whose publishing failed and waits for a retry: few, counted without a scan.
            models.Index(
                fields=["occurred_at"],
                name="outbox_failing",
                condition=Q(published_at__isnull=True, attempts__gt=0),
            ),
            models.Index(fields=["occurred_at", "id"], name="outbox_occurred"),
            # The delivery audit reads what was published since its watermark, in publishing order
            # (published_at is stamped after the row committed, unlike occurred_at).
            models.Index(
                fields=["published_at", "id"],
                name="outbox_published",
                include=["type"],
                condition=Q(published_at__isnull=False),
            ),
            models.Index(fields=["type", "occurred_at"], name="outbox_type"),
            # (aggregate_type, aggregate_id) lookups use the unique constraint's index below.
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["aggregate_type", "aggregate_id", "aggregate_version"],
                name="outbox_one_event_per_aggregate_version",
            )
        ]
        permissions = [("replay_event", "Can replay events to a topic or a consumer queue")]

    def __str__(self) -> str:
        return f"{self.type} {self.aggregate_type}:{self.aggregate_id} v{self.aggregate_version}"

    def envelope(self) -> dict[str, Any]:
        """The envelope exactly as published (and as the API returns it)."""
        return envelope.build(**{name: getattr(self, name) for name in envelope.NAMES})

    def message_body(self) -> str:
        """The envelope as sent; serialized once per loaded row (the relay sizes its batches
        with it, then sends it). An event is immutable once recorded."""
        body = self.__dict__.get("_message_body")
        if body is None:
            body = envelope.serialize(self.envelope())
            self.__dict__["_message_body"] = body
        return body


class ApiToken(models.Model):
    """A bearer token for the read-only events API. Only its SHA-256 is stored."""

    name = models.CharField(max_length=100, unique=True, help_text="Who uses it (a service name).")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()


class Heartbeat(models.Model):
    """Last time a named process or job proved it was alive (worker, beat, daily run)."""

    name = models.CharField(max_length=100, unique=True)
    beat_at = models.DateTimeField()
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} @ {self.beat_at:%Y-%m-%d %H:%M:%S}"


class RelayKick(models.Model):
    """A draining task will look for due rows later (events/publishing/kicker.py): one was sent
    and has not stopped, or one is running. One row per kicker: ``relay`` (the outbox relay),
    ``payments.charges`` (payments' charge dispatch). While ``sent_at`` is fresh, the kickers of
    every process send no task, since that task takes every row committed before it stops.
    Cleared by the task as it stops, before its last look for due rows."""

    name = models.CharField(max_length=50, primary_key=True, help_text="the relay (one per shard)")
    sent_at = models.DateTimeField(
        null=True, blank=True, help_text="since when a relay task waits or a relay runs"
    )

    def __str__(self) -> str:
        waiting = f"a relay task waiting since {self.sent_at}" if self.sent_at else "none waiting"
        return f"{self.name}: {waiting}"


class ProcessedEvent(models.Model):
    """This consumer has applied this event: written in the handler's own transaction."""

    consumer = models.CharField(max_length=50)
    event_id = models.UUIDField()
    event_type = models.CharField(max_length=100)
    payload_hash = models.CharField(max_length=64, help_text="SHA-256 of the canonical envelope")
    processed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["consumer", "event_id"], name="processed_once_per_consumer")
        ]
        ordering = ["-processed_at"]

    def __str__(self) -> str:
        return f"{self.consumer}: {self.event_type} {self.event_id}"


class ConsumerFailure(models.Model):
    """A message a consumer could not handle: why, since when, how often (keyed by SQS message id).

    SQS keeps a message's id when it moves it to the DLQ, so ``dlq_inspect``
    shows the first error seen for each dead-lettered message from here.
    """

    consumer = models.CharField(max_length=50)
    message_id = models.CharField(max_length=100)
    event_id = models.CharField(max_length=64, blank=True, default="")
    event_type = models.CharField(max_length=100, blank=True, default="")
    aggregate_id = models.CharField(max_length=64, blank=True, default="")
    first_error = models.TextField()
    last_error = models.TextField()
    failures = models.PositiveIntegerField(default=1)
    poisoned = models.BooleanField(default=False, help_text="Rejected as malformed: sent to the DLQ at once.")
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["consumer", "message_id"], name="one_failure_row_per_message")
        ]
        ordering = ["-last_seen_at"]
        permissions = [("redrive_dlq", "Can redrive dead-letter queues back to their source")]

    def __str__(self) -> str:
        return f"{self.consumer} {self.message_id}: {self.first_error[:60]}"


class AlertState(models.Model):
    """Whether an automated check is breached now: one alert per breach, one 'resolved' when it clears."""

    name = models.CharField(max_length=50, unique=True, help_text="the check")
    breached = models.BooleanField(default=False)
    since = models.DateTimeField(null=True, blank=True)
    summary = models.CharField(max_length=1000, blank=True, default="")
    version = models.BigIntegerField(default=0, help_text="aggregate_version of this check's alert events")
    checked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name}: {'BREACHED' if self.breached else 'ok'}"


class DeliveryAudit(models.Model):
    """One consumer's delivery audit (events/audit/): its watermark and its last pass.

    Every event published before ``watermark`` that this consumer subscribes to is accounted for
    (handled or dead-lettered); a pass reads only what was published since.
    """

    consumer = models.CharField(max_length=50, unique=True)
    watermark = models.DateTimeField(null=True, blank=True, help_text="published_at audited up to")
    last_pass_at = models.DateTimeField(null=True, blank=True)
    last_pass_seconds = models.FloatField(default=0)
    missing = models.PositiveIntegerField(default=0, help_text="missing at the last pass")
    resent = models.PositiveIntegerField(default=0, help_text="re-sent by the last pass")
    resent_total = models.PositiveBigIntegerField(default=0, help_text="re-sent by every pass so far")
    counts = models.JSONField(default=dict, blank=True, help_text="the last pass, per event type")

    class Meta:
        ordering = ["consumer"]

    def __str__(self) -> str:
        return f"{self.consumer}: audited to {self.watermark}"


class DeliveryResend(models.Model):
    """An event the audit re-sent to one consumer's queue: in flight until ``resent_at`` plus the
    grace period, then missing again (lost again) if still not accounted for. Deleted once it is."""

    consumer = models.CharField(max_length=50)
    event_id = models.UUIDField()
    resent_at = models.DateTimeField()
    times = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["consumer", "event_id"], name="one_resend_row_per_event")
        ]

    def __str__(self) -> str:
        return f"{self.consumer}: {self.event_id} re-sent {self.times}x"
