"""Set up the real parts for a benchmark: PostgreSQL (database billing_bench, or $BENCH_DATABASE)
and an SNS/SQS endpoint.

Import this first in every bench script. DATABASE_URL's server is used (default 127.0.0.1:5432,
user postgres); the database ``billing_bench`` (``BENCH_DATABASE`` names another, for a server that
several checkouts share) is created and migrated if needed, so benchmarks never touch development
data. The endpoint comes from devsupport.endpoint, in its own process
(in this process it would share our GIL with the code being measured): moto's server, or
ministack (the default; ``BENCH_EMULATOR=moto`` asks for moto), falling back to moto
if ministack cannot be installed or started, which ``EMULATOR`` and ``FALLBACK_REASON`` say.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devsupport.database import DEFAULT_SERVER_URL, ensure_database, postgres_answers  # noqa: E402
from devsupport.endpoint import local_endpoint  # noqa: E402

EMULATOR = ""  # "ministack 1.5.33" or "moto <version>"
FALLBACK_REASON = ""  # why moto is used when ministack was asked for
SERVER: Any = None  # the endpoint (its ``pid``: this process's own when moto runs in it)


def _start_endpoint() -> str:
    global EMULATOR, FALLBACK_REASON, SERVER
    if os.environ.get("BENCH_EMULATOR", "ministack") == "ministack":
        from devsupport.ministack import MINISTACK_VERSION

        server = SERVER = local_endpoint("ministack")
        atexit.register(server.stop)
        try:
            url = server.start()
            EMULATOR = f"ministack {MINISTACK_VERSION}"
            return url
        except Exception as exc:  # noqa: BLE001 - any failure means: use moto instead, and say why
            server.stop()
            FALLBACK_REASON = f"ministack unusable: {type(exc).__name__}: {exc}"
    import moto

    server = SERVER = local_endpoint("moto")
    atexit.register(server.stop)
    EMULATOR = f"moto {moto.__version__}"
    return server.start()


ENDPOINT = _start_endpoint()
os.environ["AWS_ENDPOINT_URL"] = ENDPOINT
os.environ.setdefault("RESOURCE_PREFIX", "billing-bench-")
os.environ["DJANGO_SETTINGS_MODULE"] = "billing_project.settings.dev"
os.environ.setdefault("DEBUG", "false")  # as in production and make run's workers: no debug cursor
os.environ.setdefault("OUTBOX_KICK_RELAY", "false")
os.environ.setdefault("LOG_LEVEL", "WARNING")

_server_url = os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
problem = postgres_answers(_server_url)
if problem:
    sys.exit(f"PostgreSQL does not answer at {_server_url}: {problem}\nSet DATABASE_URL to a server.")
os.environ["DATABASE_URL"] = ensure_database(_server_url, os.environ.get("BENCH_DATABASE", "billing_bench"))

import django  # noqa: E402

django.setup()

from django.apps import apps  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from agreements.importing import REQUIRED  # noqa: E402
from core.calendar import billing_today  # noqa: E402
from events import topology  # noqa: E402
from events.models import RelayKick  # noqa: E402
from events.topology import aws  # noqa: E402

call_command("migrate", verbosity=0, interactive=False)
call_command("messaging_provision", verbosity=0)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def plain_receive_delete(url: str, n: int) -> None:
    """The consumers' ceiling: a plain receive(10) + delete_batch loop taking n messages off ``url``
    (nothing parsed, nothing written). Every consumer benchmark compares with this one loop."""
    sqs, got = aws.client("sqs"), 0
    while got < n:
        msgs = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if msgs:
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(msgs)],
            )
            got += len(msgs)


def report(rows: list[tuple[str, str]]) -> None:
    rows = [("endpoint", EMULATOR + (f" (fell back: {FALLBACK_REASON})" if FALLBACK_REASON else "")), *rows]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


# agreement.created data used by the outbox benchmarks
AGREEMENT_DATA = {
    "agreement_id": "A",
    "external_ref": "SUB-A",
    "customer": {"external_ref": "C", "name": "Ada", "email": "ada@example.com"},
    "description": "Monthly plan",
    "amount_minor": 1999,
    "currency": "EUR",
    "interval": "month",
    "interval_count": 1,
    "start_date": "2026-01-31",
    "end_date": None,
    "status": "active",
}


def sql_floor(n: int) -> float:
    """The import's floor: seconds for one INSERT ... SELECT of n agreements and their n
    ``agreement.created`` outbox rows (rolled back), what PostgreSQL needs to store them."""
    start = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            """
            INSERT INTO agreements_agreement (id, external_ref, customer_ref, customer_name, customer_email,
                description, amount_minor, currency, price_effective_from, interval, interval_count,
                start_date, status, aggregate_version, created_at, updated_at)
            SELECT gen_random_uuid(), 'floor-' || i, 'floor-' || i, 'Customer ' || i, 'c' || i || '@example.com',
                'Plan', 1000 + mod(i, 500), 'EUR', current_date, 'month', 1, current_date, 'active', 1, now(), now()
            FROM generate_series(1, %s) AS i;
            INSERT INTO events_outboxevent (id, type, schema_version, occurred_at, producer, aggregate_type,
                aggregate_id, aggregate_version, data, attempts, last_error, errors, sns_message_id,
                next_attempt_at)
            SELECT gen_random_uuid(), 'agreement.created', 2, now(), 'agreements', 'agreement', a.id::text, 1,
                jsonb_build_object('agreement_id', a.id, 'external_ref', a.external_ref, 'amount_minor', a.amount_minor),
                0, '', '[]', '', now()
            FROM agreements_agreement a WHERE a.external_ref LIKE 'floor-%%';
            """,
            [n],
        )
        elapsed = time.perf_counter() - start
        transaction.set_rollback(True)
    return elapsed


def write_agreements_file(path: Path, n: int, prefix: str) -> None:
    """An import file of n monthly agreements starting today (``agreements_import``'s CSV): each
    owes one invoice at the next daily run. External refs are ``<prefix>-<i>``."""
    today = billing_today().isoformat()
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(REQUIRED)  # the importer's columns
        w.writerows(
            [f"{prefix}-{i}", f"Customer {i}", f"c{i}@example.com", 1000 + i % 500, "EUR", "month", today]
            for i in range(n)
        )


def clean(*extra: Any) -> None:
    """Empty the domain tables (agreements, invoicing, payments), the kick markers, the ``extra``
    models' tables and every queue of the bench prefix: each stage of a benchmark starts from
    nothing. A marker left held by the last run's stack (a kick it sent, a dispatch follow-up it
    deferred) would hold this run's first kicks back until it goes stale, and its charges until the
    beat sweep sent them: 33-50 charges/s over the first 30 s in about one run in five."""
    tables = [
        m._meta.db_table
        for label in ("agreements", "invoicing", "payments")
        for m in apps.get_app_config(label).get_models()
    ]
    tables += [m._meta.db_table for m in (RelayKick, *extra)]
    with connection.cursor() as cur:
        cur.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")
    sqs = aws.client("sqs")
    for q in topology.build().queues:
        sqs.purge_queue(QueueUrl=aws.queue_url(q.name))


def payments_due(n: int, prefix: str = "bench") -> list[str]:
    """n payments due at once (invoices ``{prefix}-{i}``), written in bulk; their ids."""
    from payments.models import Payment

    made = Payment.objects.bulk_create(
        [
            Payment(
                id=uuid.uuid4(),
                invoice_id=f"{prefix}-{i}",
                invoice_number=f"{prefix}-{i}",
                customer_ref=f"cus-{i}",
                customer_email="a@b.co",
                amount_minor=1000,
                currency="EUR",
            )
            for i in range(n)
        ],
        batch_size=5000,
    )
    return [str(p.pk) for p in made]


@contextlib.contextmanager
def sandbox_gateway(*options: str) -> Iterator[str]:
    """The shipped sandbox gateway in a process of its own (its CPU is not the bench's), with these
    command-line ``options``; the project's gateway points at it. Yields its URL; stopped after."""
    import subprocess

    from devsupport.net import free_port, port_open
    from devsupport.waiting import wait_until
    from payments.gateway import reset_gateway

    port = free_port()
    cmd = [sys.executable, "-m", "devsupport.sandbox_gateway", "--port", str(port), *options]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open("127.0.0.1", port), 30, "sandbox gateway")
        settings.PAYMENT_GATEWAY_URL = os.environ["PAYMENT_GATEWAY_URL"] = f"http://127.0.0.1:{port}"
        reset_gateway()
        yield settings.PAYMENT_GATEWAY_URL
    finally:
        proc.terminate()
        proc.wait(10)
