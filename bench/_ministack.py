"""Like ``_env``, but the AWS side is ministack (a flat local emulator) in its own virtualenv.

Import this first, *instead of* ``_env``, in a bench script that needs deep queues:
moto's SQS rescans the whole queue on every receive, so a 10,000-deep queue makes
each call take seconds there. ministack keeps a queue as a plain list and answers
a receive on a 10,000-deep queue in a few milliseconds.

ministack runs from its own virtualenv (see ``scripts/ministack.py``), on a free loopback
port, SQS/SNS/STS only, no persistence, and is stopped at exit.

If ministack cannot be installed, does not start, or fails a smoke test of the
SQS calls we use, moto's server is used instead (as in ``_env``), and
``EMULATOR`` / ``FALLBACK_REASON`` say so. ``BENCH_EMULATOR=moto`` forces moto.

The rest is ``_env``'s: PostgreSQL database ``billing_bench``, django.setup(),
migrate, messaging_provision; ``timed`` and ``report`` are re-exported.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.devstack import (  # noqa: E402
    DEFAULT_LOCAL_DB,
    free_port,
    port_open,
    postgres_answers,
    wait_for,
    with_database,
)
from scripts.ministack import MINISTACK_VERSION, Ministack  # noqa: E402

EMULATOR = ""  # "ministack 1.5.33" or "moto <version>"
FALLBACK_REASON = ""  # why moto is used, when it is
ENDPOINT = ""
LOG_FILE = Path(tempfile.gettempdir()) / f"bench-ministack-{os.getpid()}.log"


def _start_ministack() -> str:
    server = Ministack(log_file=LOG_FILE)
    atexit.register(server.stop)
    try:
        return server.start()
    except Exception:
        server.stop()
        raise


def _start_moto() -> str:
    import moto

    global EMULATOR
    os.environ.setdefault("MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR", "false")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(proc.terminate)
    wait_for(lambda: port_open("127.0.0.1", port), 30, "moto server")
    EMULATOR = f"moto {moto.__version__}"
    return f"http://127.0.0.1:{port}"


if os.environ.get("BENCH_EMULATOR", "ministack") == "moto":
    FALLBACK_REASON = "BENCH_EMULATOR=moto"
else:
    try:
        ENDPOINT = _start_ministack()
        EMULATOR = f"ministack {MINISTACK_VERSION}"
    except Exception as exc:  # noqa: BLE001 - any failure means: use moto instead, and say why
        FALLBACK_REASON = f"ministack unusable: {type(exc).__name__}: {exc}"
if not ENDPOINT:
    ENDPOINT = _start_moto()

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


def report(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
