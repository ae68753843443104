"""The daily run at scale (targets: 100,000 invoices with events <= 10 s on 2 cores; >= 20x a
per-agreement ORM loop; peak memory for 100k <= 1.5x that for 10k).

Each size runs in a fresh subprocess: projection rows are bulk-loaded (as invoicing's
consumer would have built them: monthly agreements, one period due), then the run's
chunks are executed by 2 worker processes calling the same service the Celery chunk
task calls (`invoices_issue_chunk`). Peak memory is the max RSS of the run's processes.
Baselines in the same run: a straightforward per-agreement ORM loop (on a sample,
as invoices/s) and a pure-SQL INSERT ... SELECT of the same invoice and outbox rows (the floor).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from datetime import date
from multiprocessing import get_context

RUN_DATE = date(2026, 11, 1)


def setup_django():  # noqa: ANN201
    import _env  # noqa: F401

    return _env


def reset() -> None:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "TRUNCATE invoicing_invoiceline, invoicing_invoice, invoicing_billableagreement, "
            "invoicing_invoiceseries, invoicing_dailyrun, events_outboxevent CASCADE"
        )


def load(n: int) -> None:
    from django.db import connection

    reset()
    with connection.cursor() as cur:
        cur.execute(
            """
            INSERT INTO invoicing_billableagreement
              (agreement_id, external_ref, created_seen, customer, description, currency, interval, interval_count,
               start_date, prices, toggles, cancellations, last_version, next_period_index, next_period_start,
               flagged_reason, catchup_approved, correction_flag, updated_at)
            SELECT 'bench-' || g, 'SUB-' || g, true,
                   jsonb_build_object('external_ref', 'C-' || g, 'name', 'Customer ' || g, 'email', 'c' || g || '@example.com'),
                   'Monthly plan', 'EUR', 'month', 1, %s::date,
                   jsonb_build_array(jsonb_build_array(%s::text, 1000 + g %% 500, 1)), '[]'::jsonb, '[]'::jsonb,
                   1, 0, %s::date, '', false, '', now()
              FROM generate_series(1, %s) AS g
            """,
            [RUN_DATE, RUN_DATE.isoformat(), RUN_DATE, n],
        )
        cur.execute("ANALYZE invoicing_billableagreement")


def _chunk(args: tuple[int, int]) -> int:
    from django.db import connection

    from invoicing.services import invoices_issue_chunk

    r = invoices_issue_chunk(run_date=RUN_DATE, pk_from=args[0], pk_to=args[1])
    connection.close()
    return r.issued


def _init() -> None:
    import django

    django.setup()


def run_size(n: int) -> dict:
    env = setup_django()
    from django.db import connection

    from invoicing.services import chunk_ranges

    load(n)
    start = time.perf_counter()
    ranges = list(chunk_ranges(RUN_DATE))
    connection.close()  # the forked workers must not share this connection
    with get_context("fork").Pool(2, initializer=_init) as pool:
        issued = sum(pool.map(_chunk, ranges, chunksize=1))
    wall = time.perf_counter() - start
    from events.models import OutboxEvent
    from invoicing.models import Invoice

    assert issued == n == Invoice.objects.count() == OutboxEvent.objects.filter(type="invoice.issued").count()
    assert Invoice.objects.values("sequence").distinct().count() == n
    peak_kb = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    del env
    return {"n": n, "wall": wall, "peak_mb": peak_kb / 1024}


def naive_loop(sample: int) -> float:
    """Per agreement: its own transaction, ORM get_or_create, one event, cursor save."""
    import uuid

    from django.db import transaction

    from core.calendar import period_start
    from events.publishing.outbox import record_event
    from invoicing.models import BillableAgreement, Invoice, InvoiceLine, InvoiceSeries

    load(sample)
    start = time.perf_counter()
    for p in BillableAgreement.objects.all().order_by("pk"):
        with transaction.atomic():
            series, _ = InvoiceSeries.objects.select_for_update().get_or_create(name="NAIVE")
            series.last_number += 1
            series.save()
            end = period_start(p.start_date, p.interval, p.interval_count, 1)
            inv, created = Invoice.objects.get_or_create(
                agreement_id=p.agreement_id,
                period_start=p.next_period_start,
                defaults=dict(
                    id=uuid.uuid4(),
                    number=f"NAIVE-{series.last_number}",
                    series="NAIVE",
                    sequence=series.last_number,
                    customer_ref=p.customer["external_ref"],
                    customer_name=p.customer["name"],
                    customer_email=p.customer["email"],
                    period_end=end,
                    currency=p.currency,
                    total_minor=p.prices[0][1],
                    due_date=RUN_DATE,
                    issued_at=time_now(),
                ),
            )
            if created:
                InvoiceLine.objects.create(
                    invoice=inv,
                    description="Plan",
                    unit_amount_minor=inv.total_minor,
                    amount_minor=inv.total_minor,
                )
                record_event(
                    sender=None,
                    type="invoice.issued",
                    aggregate_id=str(inv.id),
                    aggregate_version=1,
                    data={
                        "invoice_id": str(inv.id),
                        "number": inv.number,
                        "agreement_id": p.agreement_id,
                        "customer": p.customer,
                        "period_start": p.next_period_start.isoformat(),
                        "period_end": end.isoformat(),
                        "total_minor": inv.total_minor,
                        "currency": "EUR",
                        "due_date": RUN_DATE.isoformat(),
                    },
                )
            p.next_period_index = 1
            p.next_period_start = end
            p.save()
    return sample / (time.perf_counter() - start)


def time_now():  # noqa: ANN201
    from django.utils import timezone

    return timezone.now()


def sql_floor(n: int) -> float:
    from django.db import connection, transaction

    load(n)
    start = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            """
            WITH ins AS (
              INSERT INTO invoicing_invoice (id, number, series, sequence, agreement_id, customer_ref, customer_name,
                  customer_email, period_start, period_end, currency, total_minor, due_date, status, issued_at,
                  closed_reason, voided_by, payment_id, aggregate_version, revision)
              SELECT gen_random_uuid(), 'SQL-' || b.id, 'SQL', b.id, b.agreement_id, b.customer->>'external_ref',
                     b.customer->>'name', b.customer->>'email', b.next_period_start,
                     (b.next_period_start + interval '1 month')::date, b.currency, (b.prices->0->>1)::bigint,
                     b.next_period_start + 14, 'open', now(), '', '', '', 1, 0
                FROM invoicing_billableagreement b
              RETURNING id, number, agreement_id, period_start, period_end, total_minor, currency, due_date
            )
            INSERT INTO events_outboxevent (id, type, schema_version, occurred_at, producer, aggregate_type,
                aggregate_id, aggregate_version, data, attempts, last_error, errors, sns_message_id, next_attempt_at)
            SELECT gen_random_uuid(), 'invoice.issued', 1, now(), 'invoicing', 'invoice', ins.id::text, 1,
                   jsonb_build_object('invoice_id', ins.id::text, 'number', ins.number, 'total_minor', ins.total_minor),
                   0, '', '[]'::jsonb, '', now()
              FROM ins
            """
        )
    return n / (time.perf_counter() - start)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--size":
        print(json.dumps(run_size(int(sys.argv[2]))))
        return
    sizes = {}
    for n in (10_000, 100_000):
        out = subprocess.run(
            [sys.executable, __file__, "--size", str(n)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "LOG_LEVEL": "WARNING"},
        )
        sizes[n] = json.loads(out.stdout.strip().splitlines()[-1])
    env = setup_django()
    naive_rate = naive_loop(2_000)
    floor_rate = sql_floor(100_000)
    reset()
    big, small = sizes[100_000], sizes[10_000]
    rate = big["n"] / big["wall"]
    env.report(
        [
            (
                "daily run, 100,000 agreements (2 processes)",
                f"{big['wall']:.2f} s ({rate:.0f} invoices/s; target <= 10 s)",
            ),
            ("daily run, 10,000 agreements", f"{small['wall']:.2f} s"),
            ("per-agreement ORM loop (2,000 sample)", f"{naive_rate:.0f} invoices/s"),
            ("run / ORM loop throughput", f"{rate / naive_rate:.1f}x (target >= 20x)"),
            ("pure-SQL INSERT ... SELECT (floor)", f"{floor_rate:.0f} rows/s"),
            ("run / SQL floor throughput", f"{rate / floor_rate:.0%}"),
            (
                "peak RSS 10k / 100k",
                f"{small['peak_mb']:.0f} MB / {big['peak_mb']:.0f} MB "
                f"(ratio {big['peak_mb'] / small['peak_mb']:.2f}; target <= 1.5)",
            ),
        ]
    )


if __name__ == "__main__":
    main()
