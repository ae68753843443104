"""The scenario's faults: each a small object the harness arms on its day.

Delivery: every event sent again, shuffled (``Duplicator``); agreement events held back until
after the daily run of the day they take effect (``LateEvents``). Operators: voids of invoices in
dunning and of invoices whose charge is at the gateway (``OperatorVoids``). Data: hostile text
(``HOSTILE_NAMES``). Processes and the database: SIGKILL while work is in flight (``kill_when``), a
connection terminated mid-COPY of the daily run (``CopyKiller``). Poison messages (``poison``).
A consumer queue losing its messages: ``loss.QueueLoss``.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from devsupport.waiting import wait_until

# Legitimate text that looks like syntax somewhere (COPY, CSV, SQL, HTML, JSON): stored as typed.
HOSTILE_NAMES = (
    "\\N",
    "back\\slash",
    'quo"te, comma',
    "O'Brien; DROP TABLE x;--",
    "émoji 🧾",
    "<b>",
    "n" * 200,
)
HOSTILE_DESCRIPTIONS = ("tab\there", "new\nline\r\nand \\N", 'say "hi"', "\\.", "🧾" * 100)
TEN_KB = "x" * 10_240


class Duplicator:
    """Sends every published event 1-2 more times to each queue subscribed to it, shuffled.

    Straight to the queues (as SNS raw delivery puts them there), a day's worth at a time, so
    consumers see each event 2-3 times in any order, and queues never grow deep.
    """

    def __init__(self, rng: random.Random) -> None:
        from django.conf import settings

        from events import topology

        self.rng = rng
        self.done: set[str] = set()
        self.since: datetime | None = None
        self.copies = 0
        self.subscribers: dict[str, list[str]] = defaultdict(list)
        for eq in (*topology.EVENT_QUEUES, *settings.EXTRA_EVENT_QUEUES):
            for types in eq.subscriptions.values():
                for event_type in types:
                    self.subscribers[event_type].append(eq.consumer)

    def run(self) -> None:
        from django.utils import timezone

        from events import topology
        from events.models import OutboxEvent
        from events.publishing.replay import send_to_queue
        from events.publishing.sns import batches

        started = timezone.now()
        recent = OutboxEvent.objects.filter(published_at__isnull=False)
        if self.since is not None:  # a margin for rows committed late; the id set skips repeats
            recent = recent.filter(published_at__gte=self.since - timedelta(minutes=2))
        rows = [r for r in recent.order_by("published_at") if str(r.id) not in self.done]
        self.since = started
        sends = []
        for row in rows:
            self.done.add(str(row.id))
            for consumer in self.subscribers.get(row.type, []):
                sends += [(consumer, row)] * self.rng.randint(1, 2)
        self.rng.shuffle(sends)
        by_queue: dict[str, list[Any]] = defaultdict(list)
        for consumer, row in sends:
            by_queue[topology.event_queue_name(consumer)].append(row)
        for queue, queue_rows in by_queue.items():
            for group in batches(queue_rows):
                failed = send_to_queue(queue, group)
                if failed:
                    raise RuntimeError(f"duplicates refused by {queue}: {failed}")
                self.copies += len(group)


LATE_KINDS = {
    "agreement.paused": "late pause (delivered after its day's run)",
    "agreement.resumed": "late resume (delivered after its day's run)",
    "agreement.cancelled": "late cancel at period end (delivered after the next period's run)",
    "agreement.price_changed": "late price change (delivered after its period's run)",
}


class LateEvents:
    """Agreement events recorded on time but delivered after the daily run of the day they take
    effect, as an outbox backlog or a slow consumer makes them: the rows are committed with the
    change and kept back from the relay until that run has ended."""

    def __init__(self) -> None:
        self.held: list[tuple[date, list[uuid.UUID]]] = []
        self.kinds: Counter[str] = Counter()

    def record(self, change: Callable[[], Any], *, effective: date, days_later: int = 0) -> Any:
        """Run ``change`` (an agreements service call) and hold its event until ``effective``'s run
        (and ``days_later`` more runs: by then the period's invoice is paid, so the correction is a
        credit note and a refund, or a supplementary invoice, rather than a void)."""
        from django.db import transaction

        from events.models import OutboxEvent

        with transaction.atomic():
            agreement = change()
            rows = OutboxEvent.objects.filter(
                aggregate_id=str(agreement.id), aggregate_version=agreement.aggregate_version
            )
            ids = list(rows.values_list("id", flat=True))
            event_type = rows.values_list("type", flat=True).first()
            rows.update(next_attempt_at=datetime(9999, 1, 1, tzinfo=UTC))
        self.held.append((effective + timedelta(days=days_later), ids))
        self.kinds[LATE_KINDS[event_type]] += 1
        return agreement

    def held_ids(self) -> list[uuid.UUID]:
        return [i for _, ids in self.held for i in ids]

    def release(self, ran_until: date | None = None) -> int:
        """Let the relay have the events whose effective day's run has ended (all, if None)."""
        from django.db.models.functions import Now

        from events.models import OutboxEvent

        due = [ids for when, ids in self.held if ran_until is None or when <= ran_until]
        self.held = [(when, ids) for when, ids in self.held if ran_until is not None and when > ran_until]
        flat = [i for ids in due for i in ids]
        return OutboxEvent.objects.filter(id__in=flat).update(next_attempt_at=Now())


class OperatorVoids:
    """An operator voids invoices: one whose payment is in dunning, one whose charge is in flight."""

    IN_DUNNING = "operator voids an invoice in dunning"
    IN_FLIGHT = "operator voids an invoice while its charge is at the gateway"

    def __init__(self, gateway_config: Callable[..., None]) -> None:
        self.gateway_config = gateway_config
        self.waived: set[tuple[str, date]] = set()
        self.done: Counter[str] = Counter()

    def _void(self, invoice_id: str, reason: str) -> bool:
        from django.core.exceptions import ValidationError

        from invoicing.models import Invoice
        from invoicing.services import invoice_void

        try:
            inv = invoice_void(invoice_id=invoice_id, reason=reason)
        except (ValidationError, Invoice.DoesNotExist):
            return False  # paid (or gone) meanwhile: an operator would see the error and move on
        self.waived.add((inv.agreement_id, inv.period_start))
        return True

    def in_dunning(self) -> None:
        from payments.models import Payment

        for p in Payment.objects.filter(status="retry_scheduled").order_by("created_at")[:2]:
            if self._void(p.invoice_id, "operator: customer disputes it"):
                self.done[self.IN_DUNNING] += 1

    def slow_gateway(self, latency_ms: int) -> None:
        self.gateway_config(latency_ms=latency_ms)

    def in_flight(self, timeout: float = 60) -> None:
        """Wait for a charge to be at the (slowed) gateway and void its invoice."""
        from payments.models import Payment

        def processing() -> Any:
            return Payment.objects.filter(status="processing").order_by("updated_at").first()

        try:
            p = wait_until(processing, timeout, "a charge in flight", interval=0.02)
        except TimeoutError:
            return
        if self._void(p.invoice_id, "operator: issued in error"):
            self.done[self.IN_FLIGHT] += 1


class CopyKiller:
    """A database trigger that terminates its own connection on the first invoice row of the run's
    COPY: the chunk's connection drops mid-statement, exactly once."""

    KIND = "connection terminated mid-COPY of the daily run"

    def __init__(self) -> None:
        self.armed = False

    def arm(self) -> None:
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute(
                """
                DROP SEQUENCE IF EXISTS scenario_copy_kill; CREATE SEQUENCE scenario_copy_kill;
                CREATE OR REPLACE FUNCTION scenario_copy_kill() RETURNS trigger AS $$
                BEGIN
                  IF nextval('scenario_copy_kill') = 1 THEN
                    PERFORM pg_terminate_backend(pg_backend_pid());
                  END IF;
                  RETURN NEW;
                END $$ LANGUAGE plpgsql;
                DROP TRIGGER IF EXISTS scenario_copy_kill ON invoicing_invoice;
                CREATE TRIGGER scenario_copy_kill BEFORE INSERT ON invoicing_invoice
                  FOR EACH ROW EXECUTE FUNCTION scenario_copy_kill();
                """
            )
        self.armed = True

    def fired(self) -> bool:
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("SELECT last_value, is_called FROM scenario_copy_kill")
            _, called = cur.fetchone()
        return bool(called)

    def disarm(self) -> None:
        from django.db import connection

        if self.armed:
            with connection.cursor() as cur:
                cur.execute("DROP TRIGGER IF EXISTS scenario_copy_kill ON invoicing_invoice")
            self.armed = False


def kill_when(fleet: Any, rng: random.Random, kind: str, busy: Callable[[], bool]) -> bool:
    """SIGKILL a worker as soon as ``busy()`` says work is in flight, then start it again."""
    try:
        wait_until(busy, 30, kind, interval=0.02)
    except TimeoutError:
        return False
    victim = rng.randrange(len(fleet.workers))
    fleet.kill_worker(victim)
    fleet.start_worker(victim)
    return True


def in_flight(kind: str) -> bool:
    from events.operations.observations import queue_stats

    return any(s.in_flight for s in queue_stats(with_age=False) if s.kind == kind and not s.is_dlq)


def poison(rng: random.Random, per_queue: int) -> int:
    """Malformed messages into the invoicing and payments queues; returns how many were sent."""
    from events import topology
    from events.topology import aws

    sqs = aws.client("sqs")
    for consumer in ("invoicing", "payments"):
        url = aws.queue_url(topology.event_queue_name(consumer))
        for n in range(per_queue):
            body = rng.choice(["not json", "[]", json.dumps({"id": n}), "{" * 5000])
            sqs.send_message(QueueUrl=url, MessageBody=body)
    return 2 * per_queue


def terminate_connections() -> int:
    """pg_terminate_backend on every other connection to the database; returns how many."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cur.fetchone()[0])
