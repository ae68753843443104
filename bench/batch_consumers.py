"""The real consumers vs a plain receive(10)+delete_batch loop on the same endpoint (target >= 60%).

Issue 17: invoicing's projection of agreement events, invoicing's ``payment.succeeded`` (open
invoices marked paid: one per charge, so it is in every charge's cost) and payments'
invoice.issued, each run by the push consumer (the one a worker runs, with its settings' pollers and handler threads) on its
own queue, against a plain boto3 loop that only receives and deletes the same number of messages.
ministack (``_env``) by default: a flat emulator, so a queue of N messages costs what a
shallow one costs; both sides see the same N. Payments' consumer sends no charge: its commits
kick a dispatch pass (payments/services/dispatching.py), which a worker runs in another process.
The bench runs that pass itself after each consumer run, times it apart and prints the two
together, so the CPU moved out of the consumer is still counted; the charges go to the Celery
payments queue as a worker would send them (no worker takes them; purged between runs).

    cd bench && ../.venv/bin/python batch_consumers.py [N] [--pollers P] [--concurrency C] [--only WHAT]

Prints msg/s and our process's CPU per message for each side, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable
from datetime import date

import _env
from django.conf import settings
from django.utils import timezone

from events import topology
from events.consuming.config import consumer_configs
from events.consuming.push import PushConsumer
from events.models import OutboxEvent, ProcessedEvent
from events.signing import signed_attributes
from events.topology import aws
from invoicing.models import BillableAgreement, Invoice
from payments.models import Payment
from payments.services import charges_dispatch
from payments.services.dispatching import charges_due

ROUNDS = 2


def agreement_created(i: int) -> str:
    agreement_id = f"BA-{i}-{uuid.uuid4().hex[:8]}"
    return _envelope(
        "agreement.created",
        "agreements",
        "agreement",
        agreement_id,
        {
            **_env.AGREEMENT_DATA,
            "agreement_id": agreement_id,
            "external_ref": f"SUB-{i}",
            "customer": {"external_ref": f"C-{i}", "name": "Ada", "email": "ada@example.com"},
        },
        schema_version=2,
    )


def invoice_issued(i: int) -> str:
    invoice_id = str(uuid.uuid4())
    return _envelope(
        "invoice.issued",
        "invoicing",
        "invoice",
        invoice_id,
        {
            "invoice_id": invoice_id,
            "number": f"INV-B-{i:07d}",
            "agreement_id": f"BA-{i}",
            "customer": {"external_ref": f"C-{i}", "name": "Ada", "email": "ada@example.com"},
            "period_start": "2026-01-01",
            "period_end": "2026-02-01",
            "total_minor": 1999,
            "currency": "EUR",
            "due_date": "2026-01-15",
        },
    )


PAID_NAMESPACE = uuid.UUID("6f1c2b9e-7d4a-4f0e-9a51-2d8c3e7b1a60")


def paid_invoice_id(i: int) -> str:
    return str(uuid.uuid5(PAID_NAMESPACE, str(i)))


def payment_succeeded(i: int) -> str:
    payment_id = str(uuid.uuid4())
    return _envelope(
        "payment.succeeded",
        "payments",
        "payment",
        payment_id,
        {
            "payment_id": payment_id,
            "invoice_id": paid_invoice_id(i),
            "amount_minor": 1999,
            "currency": "EUR",
            "gateway_reference": f"ch_{i}",
        },
    )


def open_invoices(n: int) -> None:
    """The n open invoices that ``payment_succeeded`` messages pay (all of them open again)."""
    Invoice.objects.all().delete()
    Invoice.objects.bulk_create(
        [
            Invoice(
                id=paid_invoice_id(i),
                number=f"INV-P-{i:07d}",
                series="INV-P",
                sequence=i,
                agreement_id=f"BA-{i}",
                customer_ref=f"C-{i}",
                customer_name="Ada",
                customer_email="ada@example.com",
                period_start=date(2026, 1, 1),
                period_end=date(2026, 2, 1),
                currency="EUR",
                total_minor=1999,
                due_date=date(2026, 1, 15),
                issued_at=timezone.now(),
            )
            for i in range(n)
        ],
        batch_size=2000,
    )


def all_paid(n: int) -> None:
    assert Invoice.objects.filter(status="paid").count() == n, "every invoice paid"


def _envelope(
    type: str, producer: str, aggregate_type: str, aggregate_id: str, data: dict, schema_version: int = 1
) -> str:
    return json.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": type,
            "schema_version": schema_version,
            "occurred_at": "2026-11-27T10:00:00Z",
            "producer": producer,
            "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id,
            "aggregate_version": 1,
            "data": data,
        }
    )


def fill(queue: str, make: Callable[[int], str], n: int) -> None:
    sqs, url = aws.client("sqs"), aws.queue_url(queue)
    for i in range(0, n, 10):
        bodies = [make(i + j) for j in range(10)]
        resp = sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(j), "MessageBody": b, "MessageAttributes": signed_attributes(b)}
                for j, b in enumerate(bodies)
            ],
        )
        assert not resp.get("Failed"), resp


def purge(*queues: str) -> None:
    sqs = aws.client("sqs")
    for queue in queues:
        sqs.purge_queue(QueueUrl=aws.queue_url(queue))
    time.sleep(0.2)


def plain_loop(queue: str, n: int) -> None:
    _env.plain_receive_delete(aws.queue_url(queue), n)


def consume(name: str, n: int) -> PushConsumer:
    consumer = PushConsumer(consumer_configs()[name])
    consumer.start()
    while consumer.handled < n:  # handled = settled: processed and deleted
        time.sleep(0.005)
    return consumer  # stopped by the caller, outside the timing (stop waits for a long poll)


def reset(name: str) -> None:
    ProcessedEvent.objects.filter(consumer=name).delete()
    BillableAgreement.objects.all().delete()
    Payment.objects.all().delete()
    OutboxEvent.objects.all().delete()
    purge(topology.task_queue_name("payments"))


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of this process (all its threads) for ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(
    name: str,
    make: Callable[[int], str],
    n: int,
    *,
    label: str | None = None,
    before: Callable[[int], None] | None = None,
    after: Callable[[int], None] | None = None,
) -> list[tuple[str, str]]:
    """``name``'s consumer on ``n`` messages of ``make`` against the plain loop; ``before(n)`` sets
    up what the messages need before each consumer run, ``after(n)`` checks what it did."""
    queue = topology.event_queue_name(name)
    base: list[tuple[float, float]] = []
    ours: list[tuple[float, float]] = []
    dispatch: list[tuple[float, float]] = []
    for _ in range(ROUNDS):
        purge(queue)
        fill(queue, make, n)
        base.append(timed(lambda: plain_loop(queue, n)))
        reset(name)
        if before:
            before(n)
        purge(queue)
        fill(queue, make, n)
        wall, cpu = time.perf_counter(), time.process_time()
        consumer = consume(name, n)
        ours.append((time.perf_counter() - wall, time.process_time() - cpu))
        consumer.stop()
        assert ProcessedEvent.objects.filter(consumer=name).count() == n, "every message handled once"
        if after:
            after(n)
        if name == "payments":  # the pass its commits kicked, which a worker runs
            dispatch.append(timed(lambda: charges_dispatch(max_seconds=600)))
            assert not charges_due().exists(), "the pass sent every charge"
    (b, bcpu), (p, pcpu) = min(base), min(ours)
    cfg = consumer_configs()[name]
    label = label or name
    extra = []
    if dispatch:
        d, dcpu = min(dispatch)
        extra = [
            (
                f"{name}: dispatch pass (a worker's process): {n:,} charges leased and sent",
                f"{n / d:,.0f} charges/s, {dcpu / n * 1000:.2f} ms CPU/charge",
            ),
            (f"{name}: consumer + dispatch CPU", f"{(pcpu + dcpu) / n * 1000:.2f} ms/msg"),
        ]
    return [
        (
            f"{label}: plain receive(10)+delete_batch loop",
            f"{n / b:,.0f} msg/s, {bcpu / n * 1000:.2f} ms CPU/msg",
        ),
        (
            f"{label}: push consumer ({cfg.pollers} poller(s), {cfg.concurrency} threads)",
            f"{n / p:,.0f} msg/s, {pcpu / n * 1000:.2f} ms CPU/msg",
        ),
        (f"{label}: consumer / plain", f"{b / p:.0%} (target >= 60%)"),
        *extra,
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", nargs="?", type=int, default=2000)
    parser.add_argument("--pollers", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--only", choices=["invoicing", "paid", "payments"], default=None)
    args = parser.parse_args()
    overrides = {k: v for k, v in (("pollers", args.pollers), ("concurrency", args.concurrency)) if v}
    settings.EVENT_CONSUMERS = {name: overrides for name in ("invoicing", "payments")}
    rows = [("messages per run (best of 2)", f"{args.n:,}")]  # report() names the endpoint
    if args.only in (None, "invoicing"):
        rows += measure("invoicing", agreement_created, args.n)
    if args.only in (None, "paid"):
        rows += measure(
            "invoicing", payment_succeeded, args.n, label="paid", before=open_invoices, after=all_paid
        )
    if args.only in (None, "payments"):
        rows += measure("payments", invoice_issued, args.n)
    _env.report(rows)
    reset("invoicing")
    reset("payments")


if __name__ == "__main__":
    main()
