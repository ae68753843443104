"""The delivery audit: lost messages healed, and a pass over a big event store.

    cd bench && ../.venv/bin/python delivery_audit.py [--events 5000] [--rows 1000000]

1. **Lose every queued message** (ministack unless ``BENCH_EMULATOR=moto``; the sandbox gateway;
   one Celery worker with the push consumers, as ``make run``): ``agreements_import`` of N
   agreements starting today, their N ``agreement.created`` published to invoicing's queue, then
   the queue is purged before the consumer ran (what restarting an endpoint that keeps queues in
   memory does). Audit passes (``delivery_audit_run(repair=True)``, what beat's task runs) until
   nothing is missing. Then the same for payments: ``invoices_issue`` with payments' consumer down,
   N ``invoice.issued`` lost, audit passes. Figures: passes needed, alerts raised, the first pass's
   time (its comparison alone, as a dry run, and its re-sending next to a plain loop reading, signing
   and SendMessageBatch-ing the same N events at the same concurrency: the baseline, measured after
   the consumers are done, while the re-sending shares the machine with them), time until handled,
   and the effects counted at the end: invoices per agreement and period, charges per invoice at
   the gateway.
2. **An audit pass over 1,000,000 stored events with nothing missing** (``_audit_store.py``) (rows made with INSERT ...
   SELECT generate_series, every one handled): a full pass (``full=True``) next to the floor, one
   indexed SQL anti-join counting the same consumer's unhandled events over the same rows, each in
   a fresh process (time: median of 3, alternating; memory: the process's peak RSS while the operation
   runs, sampled every 2 ms, and its growth over the RSS before it), at 100,000
   and at 1,000,000 rows; and the next incremental pass (from the watermark).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

GRACE = 3  # seconds: the events are past the grace period soon after they are lost


os.environ.setdefault("BENCH_EMULATOR", "ministack")
os.environ["DELIVERY_AUDIT_GRACE_SECONDS"] = str(GRACE)
# The relay fills queues no consumer reads here, on purpose: not held for their depth (holding.py).
os.environ["OUTBOX_RELAY_HOLD_DEPTH"] = "0"
import _env  # noqa: E402
import _stack  # noqa: E402
from _audit_store import scale  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db.models import Count  # noqa: E402

from devsupport.net import free_port, port_open  # noqa: E402
from devsupport.waiting import wait_until  # noqa: E402
from events import contracts, topology  # noqa: E402
from events.audit import delivery_audit_run  # noqa: E402
from events.models import AlertState, DeliveryAudit, DeliveryResend, OutboxEvent, ProcessedEvent  # noqa: E402
from events.publishing.relay import relay_pending  # noqa: E402
from events.publishing.relay_pass import relay_once  # noqa: E402
from events.publishing.sns import message_attributes  # noqa: E402
from events.topology import aws  # noqa: E402

ROOT = _env.ROOT
PY = sys.executable


def depth(consumer: str) -> int:
    attrs = aws.client("sqs").get_queue_attributes(
        QueueUrl=aws.queue_url(topology.event_queue_name(consumer)),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def plain_send(event_type: str, n: int) -> float:
    """Seconds for a plain loop doing what any re-send must: read the n events from the store,
    serialize and sign them, SendMessageBatch them (to a scratch queue) with as many calls in
    flight as the backfill. The baseline of its re-sending, with nothing else (no bookkeeping)."""
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName=topology.prefixed("audit-baseline"))["QueueUrl"]

    def send(group: list[OutboxEvent]) -> None:
        entries = [
            {
                "Id": str(k),
                "MessageBody": r.message_body(),
                "MessageAttributes": message_attributes(r, replayed=True),
            }
            for k, r in enumerate(group)
        ]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)

    start_at = time.perf_counter()
    rows = OutboxEvent.objects.filter(type=event_type).order_by("published_at")[:n].iterator(chunk_size=500)
    with ThreadPoolExecutor(settings.OUTBOX_RELAY_PUBLISH_CONCURRENCY) as pool:
        group: list[OutboxEvent] = []
        futures = []
        for row in rows:
            group.append(row)
            if len(group) == 10:
                futures.append(pool.submit(send, group))
                group = []
        if group:
            futures.append(pool.submit(send, group))
        for f in futures:
            f.result()
    elapsed = time.perf_counter() - start_at
    sqs.delete_queue(QueueUrl=url)
    return elapsed


class Stack:
    """The sandbox gateway, and a worker with the push consumers (started through bench/_stack.py)."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="delivery-audit-"))
        port = free_port()
        self.env = {**os.environ, "PAYMENT_GATEWAY_URL": f"http://127.0.0.1:{port}", "LOG_LEVEL": "WARNING"}
        self.env["OUTBOX_KICK_RELAY"] = "false"  # the bench relays itself where it matters
        gateway = [PY, "-m", "devsupport.sandbox_gateway", "--port", str(port), "--latency-ms", "20"]
        self.gateway = _stack.start("gateway", [*gateway, "--rate-limit", "1000"], self.env, self.tmp)
        wait_until(lambda: port_open("127.0.0.1", port), 30, "gateway")
        self.gateway_url = f"http://127.0.0.1:{port}"
        self.worker: subprocess.Popen[bytes] | None = None

    def start_worker(self) -> None:
        # threads: 5,000 charges (waiting on the gateway) and the relay kicks their events send
        # would take many minutes on 2 prefork processes; the figures do not depend on it
        queues = "default,events,invoicing,payments"
        argv = [*_stack.CELERY, "worker", "-Q", queues, "--pool", "threads", "--concurrency", "8"]
        argv += ["-l", "WARNING", "-n", "audit-bench@%h"]
        env = _stack.background_env({**self.env, "OUTBOX_KICK_RELAY": "true"})  # as make run's
        self.worker = _stack.start("worker", argv, env, self.tmp)
        time.sleep(8)  # its push consumers connect

    def stop_worker(self) -> None:
        if self.worker:
            _stack.stop(self.worker)
            self.worker = None

    def close(self) -> None:
        self.stop_worker()
        _stack.stop(self.gateway)

    def manage(self, *args: str) -> None:
        subprocess.run(
            [PY, "manage.py", *args], cwd=ROOT, env=self.env, check=True, stdout=subprocess.DEVNULL
        )


def heal(consumer: str, event_type: str, n: int) -> dict:
    """The consumer's queue lost every message: audit passes until nothing is missing."""
    time.sleep(GRACE + 0.5)
    dry = delivery_audit_run(consumer=consumer, dry_run=True)
    assert dry.totals.missing == n, (dry.totals, n)
    passes, first_seconds, resent, handled_at = [], 0.0, 0, 0.0
    handled = ProcessedEvent.objects.filter(consumer=consumer, event_type=event_type)
    t0 = time.perf_counter()
    while True:
        report = delivery_audit_run(consumer=consumer, repair=True)
        if report.alert:
            relay_once(alerts_only=True)
        passes.append((report.totals.missing, report.resent, report.alert))
        if not passes[1:]:
            first_seconds, resent = report.seconds, report.resent
        if not report.gap or len(passes) == 5:
            break
        wait_until(lambda: handled.count() >= n, 900, f"{n} {event_type} handled by {consumer}", interval=0.5)
        handled_at = time.perf_counter() - t0
    alerts = OutboxEvent.objects.filter(type=contracts.ALERT_DELIVERY_GAP, data__details__consumer=consumer)
    return {
        "passes": passes,
        "compare_s": dry.seconds,
        "first_s": first_seconds,
        "resent": resent,
        "plain_s": plain_send(event_type, n),
        "handled_s": handled_at,
        "alerts": alerts.count(),
    }


def lose_and_heal(n: int) -> list[tuple[str, str]]:
    _env.clean(OutboxEvent, ProcessedEvent, DeliveryAudit, DeliveryResend, AlertState)
    stack = Stack()
    try:
        # N agreements, their agreement.created published to invoicing's queue and lost there
        path = stack.tmp / "agreements.csv"
        _env.write_agreements_file(path, n, "HEAL")
        stack.manage("agreements_import", str(path))
        relay_pending(max_seconds=900)
        wait_until(lambda: depth("invoicing") >= n, 300, "agreement.created queued")
        aws.client("sqs").purge_queue(QueueUrl=aws.queue_url(topology.event_queue_name("invoicing")))
        stack.start_worker()
        inv = heal("invoicing", contracts.AGREEMENT_CREATED, n)

        # the day's invoices issued with payments' consumer down; their invoice.issued lost
        stack.stop_worker()
        stack.manage("invoices_issue")
        relay_pending(max_seconds=900)
        wait_until(lambda: depth("payments") >= n, 300, "invoice.issued queued")
        aws.client("sqs").purge_queue(QueueUrl=aws.queue_url(topology.event_queue_name("payments")))
        stack.start_worker()
        pay = heal("payments", contracts.INVOICE_ISSUED, n)

        from invoicing.models import Invoice
        from payments.models import Payment

        wait_until(
            lambda: Payment.objects.filter(status="succeeded").count() >= n, 900, "charges", interval=1
        )
        import urllib.request

        with urllib.request.urlopen(f"{stack.gateway_url}/v1/_stats") as resp:
            stats = json.load(resp)
        per_period = Invoice.objects.values("agreement_id", "period_start").annotate(k=Count("id"))
        doubled_invoices = per_period.filter(k__gt=1).count()
        charged_keys = stats["charges_by_key"]
        doubled_charges = sum(1 for k in charged_keys.values() if k > 1)
    finally:
        stack.close()

    def row(name: str, r: dict) -> list[tuple[str, str]]:
        rate = lambda s: f"{n / s:,.0f}/s"  # noqa: E731
        return [
            (
                f"{name}: lost",
                f"{n:,} queued messages, 0 handled; passes (missing, re-sent, alert): {r['passes']}",
            ),
            (
                f"{name}: first pass",
                f"{r['first_s']:.2f} s: compare {r['compare_s'] * 1000:.0f} ms (dry run), re-sent {r['resent']:,}; "
                f"re-sending {rate(r['first_s'] - r['compare_s'])} vs plain SendMessageBatch loop "
                f"{rate(r['plain_s'])}: {r['plain_s'] / max(r['first_s'] - r['compare_s'], 1e-6):.0%}",
            ),
            (
                f"{name}: all handled",
                f"{r['handled_s']:.1f} s after the first pass; alert.delivery_gap raised {r['alerts']}x",
            ),
        ]

    return [
        ("events lost per consumer", f"{n:,}"),
        *row("invoicing (agreement.created)", inv),
        *row("payments (invoice.issued)", pay),
        (
            "effects",
            f"{Invoice.objects.count():,} invoices, {doubled_invoices} doubled periods; "
            f"{stats['charges']:,} charges at the gateway for {Payment.objects.count():,} payments, "
            f"{doubled_charges} keys charged twice",
        ),
        ("logs", str(stack.tmp)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000, help="messages lost per consumer (0: skip)")
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="stored events for the big pass (0: skip)"
    )
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    if args.events:
        rows += lose_and_heal(args.events)
    if args.rows:
        _env.clean(OutboxEvent, ProcessedEvent, DeliveryAudit, DeliveryResend, AlertState)
        rows += scale(sorted({min(100_000, args.rows), args.rows}))
    _env.report(rows)


if __name__ == "__main__":
    main()
