"""Set up the real parts for a benchmark: PostgreSQL (database billing_bench) and moto's server.

Import this first in every bench script. DATABASE_URL's server is used (default
127.0.0.1:5432, user postgres); the database ``billing_bench`` is created and
migrated if needed, so benchmarks never touch development data.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import atexit  # noqa: E402
import subprocess  # noqa: E402

from scripts.devstack import (  # noqa: E402
    DEFAULT_LOCAL_DB,
    free_port,
    port_open,
    postgres_answers,
    wait_for,
    with_database,
)

os.environ.setdefault("MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR", "false")
# moto in its own process, as `make run` has it: in-process it would share our GIL
# with the code being measured and slow every API call down.
_port = free_port()
_moto = subprocess.Popen(
    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(_port)],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
atexit.register(_moto.terminate)
wait_for(lambda: port_open("127.0.0.1", _port), 30, "moto server")
ENDPOINT = f"http://127.0.0.1:{_port}"
os.environ["AWS_ENDPOINT_URL"] = ENDPOINT
os.environ.setdefault("RESOURCE_PREFIX", "billing-bench-")
os.environ["DJANGO_SETTINGS_MODULE"] = "billing_project.settings.dev"
os.environ.setdefault("OUTBOX_KICK_RELAY", "false")
os.environ.setdefault("LOG_LEVEL", "WARNING")

_server_url = os.environ.get("DATABASE_URL") or DEFAULT_LOCAL_DB
problem = postgres_answers(with_database(_server_url, "postgres"))
if problem:
    sys.exit(f"PostgreSQL does not answer at {_server_url}: {problem}\nSet DATABASE_URL to a server.")
import psycopg2  # noqa: E402

_conn = psycopg2.connect(with_database(_server_url, "postgres").replace("postgres://", "postgresql://"))
_conn.autocommit = True
with _conn.cursor() as cur:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = 'billing_bench'")
    if cur.fetchone() is None:
        cur.execute("CREATE DATABASE billing_bench")
_conn.close()
os.environ["DATABASE_URL"] = with_database(_server_url, "billing_bench")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

call_command("migrate", verbosity=0, interactive=False)
call_command("messaging_provision", verbosity=0)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def report(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


# agreement.created data used by the outbox benchmarks
AGREEMENT_DATA = {
    "agreement_id": "A",
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
