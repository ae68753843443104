"""Operations behind a backlog: messaging_status, /readyz and the Messaging page with 100,000
unpublished outbox events and 100,000 charges waiting at the gateway (target: each under 1 s), and
where the relay puts an alert.

The outbox is emptied, then filled by SQL (devsupport.backlog): ``--published`` rows of history
(default 200,000) and ``--backlog`` unpublished ones (default 100,000), not analyzed (the worst
moment: right after a daily run). Each view is timed ``--repeat`` times (median), next to a
trivial query and to what an exact count and an unindexed oldest-row read of the same backlog
cost, in the same run. The payments table gets ``--payments`` pending charges (default 100,000),
a tenth as many dunning retries over the next week and twice as many succeeded payments, for the
page's payments panel. Then one alert is recorded and the relay makes one pass of 10 rows: the
alert must be among them.

    cd bench && ../.venv/bin/python ops_under_backlog.py [--backlog 100000] [--published 200000] [--payments 100000]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import _env
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test import Client

from devsupport.backlog import outbox_backlog_insert
from events.models import OutboxEvent
from events.operations.alerts import record_alert
from events.operations.counts import outbox_stats
from events.publishing.relay_pass import relay_once
from payments.console import payments_panel

TARGET_SECONDS = 1.0


def median_seconds(fn: Callable[[], Any], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def status() -> None:
    try:
        call_command("messaging_status", stdout=io.StringIO())
    except CommandError:
        pass  # a breach (the backlog is one) exits 2: the screen was still produced


PAYMENTS_FILL = """
INSERT INTO payments_payment (id, invoice_id, invoice_number, customer_ref, customer_email, amount_minor,
    currency, status, dunning_step, transient_failures, next_attempt_at, gateway_reference,
    last_error_class, last_error_message, invoice_closed_reason, aggregate_version, created_at, updated_at)
SELECT gen_random_uuid(), %(label)s || '-' || i, 'BKL-' || i, 'cus-' || i, 'c@example.com', 1999, 'EUR',
       %(status)s, 0, 0, now() + make_interval(secs => %(spread)s * i::float8 / %(n)s), '', '', '', '', 1,
       now(), now()
  FROM generate_series(1, %(n)s) AS i
"""


def payments_fill(pending: int) -> None:
    """Charges waiting (their lease 15 minutes on), as many due and not yet sent (a big daily run
    held back by PAYMENT_DISPATCH_AHEAD_SECONDS, due over the last hour), retries over the next
    week, a history."""
    with connection.cursor() as cur:
        cur.execute("TRUNCATE payments_payment CASCADE")
        for label, status, n, spread in (
            ("queued", "pending", pending, 900),
            ("unsent", "pending", pending, -3600),
            ("retry", "retry_scheduled", pending // 10, 7 * 86400),
            ("paid", "succeeded", 2 * pending, 0),
        ):
            cur.execute(PAYMENTS_FILL, {"label": label, "status": status, "n": n, "spread": spread})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--published", type=int, default=200_000)
    parser.add_argument("--payments", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with connection.cursor() as cur:
        cur.execute("TRUNCATE events_outboxevent")
    start = time.perf_counter()
    with transaction.atomic():
        outbox_backlog_insert(args.published, spread_seconds=30 * 86400, published=True)
        outbox_backlog_insert(args.backlog)
        payments_fill(args.payments)
    filled = time.perf_counter() - start

    user, _ = User.objects.get_or_create(
        username="bench-ops", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)

    def page() -> None:
        resp = client.get("/admin/messaging/")
        assert resp.status_code == 200, resp.status_code

    def ready() -> None:
        resp = client.get("/readyz")
        assert resp.status_code == 200, resp.content

    def trivial() -> None:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")

    def exact_count() -> None:
        OutboxEvent.objects.filter(published_at__isnull=True).count()

    def unindexed_oldest() -> None:
        with connection.cursor() as cur:  # what min() costs without the partial index on occurred_at
            cur.execute(
                "SELECT min(occurred_at + interval '0') FROM events_outboxevent WHERE published_at IS NULL"
            )

    stat = outbox_stats()
    page()  # warm: URL resolving, templates, the queue URL cache
    rows = [
        ("emulator", _env.EMULATOR),
        ("outbox", f"{args.published:,} published + {args.backlog:,} unpublished, filled in {filled:.1f} s"),
        (
            "outbox as shown",
            # getattr: the same script measures the code before bounded counts (an exact count)
            f"{getattr(stat, 'unpublished_text', stat.unpublished)} unpublished, "
            f"{getattr(stat, 'failing_text', stat.failing)} failing",
        ),
        ("baseline: SELECT 1", f"{median_seconds(trivial, args.repeat) * 1000:.2f} ms"),
        (
            "for scale: exact count(*) of the backlog",
            f"{median_seconds(exact_count, args.repeat) * 1000:.1f} ms",
        ),
        (
            "for scale: min(occurred_at) without its index",
            f"{median_seconds(unindexed_oldest, args.repeat) * 1000:.1f} ms",
        ),
        ("outbox_stats()", f"{median_seconds(outbox_stats, args.repeat) * 1000:.1f} ms"),
        (
            "payments",
            f"{args.payments:,} pending, {args.payments:,} due and unsent, {args.payments // 10:,} retries, "
            f"{2 * args.payments:,} succeeded",
        ),
        ("payments panel as shown", payments_panel()["forecast"].text),
        ("payments panel, unsent", payments_panel()["unsent"].text[:90] + "..."),
        ("payments panel read", f"{median_seconds(payments_panel, args.repeat) * 1000:.1f} ms"),
    ]
    for name, fn in (("messaging_status", status), ("/readyz", ready), ("Messaging page", page)):
        took = median_seconds(fn, args.repeat)
        verdict = "ok" if took < TARGET_SECONDS else f"OVER {TARGET_SECONDS:g} s"
        rows.append((name, f"{took * 1000:.0f} ms ({verdict})"))

    # An alert recorded now, behind the whole backlog: the relay's next claim starts with it.
    with transaction.atomic():
        record_alert(
            sender=None,
            check="refund_failed",
            about="bench-backlog",
            severity="warning",
            summary="behind the backlog",
            details={},
        )
    start = time.perf_counter()
    result = relay_once(limit=10)
    pass_ms = (time.perf_counter() - start) * 1000
    alert = OutboxEvent.objects.get(type="alert.refund_failed")
    bulk = (
        OutboxEvent.objects.filter(type="invoice.issued", published_at__isnull=False).count() - args.published
    )
    rows.append(
        (
            "relay pass of 10 rows behind the backlog",
            f"{pass_ms:.0f} ms (claim + 2 PublishBatch); alert published: {alert.published_at is not None}, "
            f"bulk published: {bulk} of {result.published - 1} expected",
        )
    )
    _env.report(rows)


if __name__ == "__main__":
    main()
