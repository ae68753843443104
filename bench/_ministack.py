"""Like ``_env``, but the AWS side is ministack (a flat local emulator) in its own virtualenv.

Import this first, *instead of* ``_env``, in a bench script that needs deep queues:
moto's SQS rescans the whole queue on every receive, so a 10,000-deep queue makes
each call take seconds there. ministack keeps a queue as a plain list and answers
a receive on a 10,000-deep queue in a few milliseconds.

ministack is not a project dependency: it runs from its own virtualenv
(``$MINISTACK_VENV``, default ``.data/ministack-venv``, git-ignored), which is
created with ``pip install ministack==1.5.33`` when missing. It is started on a
free loopback port, SQS/SNS/STS only, no persistence, and stopped at exit.

If ministack cannot be installed, does not start, or fails a smoke test of the
SQS calls we use, moto's server is used instead (as in ``_env``), and
``EMULATOR`` / ``FALLBACK_REASON`` say so. ``BENCH_EMULATOR=moto`` forces moto.

The rest is ``_env``'s: PostgreSQL database ``billing_bench``, django.setup(),
migrate, messaging_provision; ``timed`` and ``report`` are re-exported.
"""

from __future__ import annotations

import atexit
import os
import signal
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

MINISTACK_VERSION = "1.5.33"
VENV = Path(os.environ.get("MINISTACK_VENV", ROOT / ".data" / "ministack-venv"))
LOG_FILE = Path(tempfile.gettempdir()) / f"bench-ministack-{os.getpid()}.log"

EMULATOR = ""  # "ministack 1.5.33" or "moto <version>"
FALLBACK_REASON = ""  # why moto is used, when it is
ENDPOINT = ""
_proc: subprocess.Popen[bytes] | None = None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        _stop_group(proc)
    if proc.returncode in (0, -signal.SIGTERM) and LOG_FILE.exists() and not LOG_FILE.stat().st_size:
        LOG_FILE.unlink()  # keep the log only when it says something


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and nothing else
        except ProcessLookupError:
            return
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if python.exists():
        return python
    print(f"[bench] creating {VENV} with ministack=={MINISTACK_VERSION} (once)", flush=True)
    for argv in (
        [sys.executable, "-m", "venv", str(VENV)],
        [str(python), "-m", "pip", "install", "--quiet", f"ministack=={MINISTACK_VERSION}"],
    ):
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"{' '.join(argv[1:4])} failed: {' | '.join(tail)}")
    return python


def _smoke(endpoint: str) -> None:
    """The SQS calls the DLQ tools make, once each, on a throwaway queue."""
    import boto3

    sqs = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    url = sqs.create_queue(QueueName="bench-smoke")["QueueUrl"]
    assert sqs.get_queue_url(QueueName="bench-smoke")["QueueUrl"] == url
    attrs = {"event_type": {"DataType": "String", "StringValue": "smoke"}}
    ok = sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": "0", "MessageBody": "{}", "MessageAttributes": attrs}]
    )
    assert len(ok.get("Successful", [])) == 1, ok
    msgs = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
    ).get("Messages", [])
    assert len(msgs) == 1 and msgs[0]["MessageAttributes"]["event_type"]["StringValue"] == "smoke", msgs
    done = sqs.delete_message_batch(
        QueueUrl=url, Entries=[{"Id": "0", "ReceiptHandle": msgs[0]["ReceiptHandle"]}]
    )
    assert len(done.get("Successful", [])) == 1, done
    sqs.delete_queue(QueueUrl=url)


def _start_ministack() -> str:
    global _proc
    python = _ensure_venv()
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "GATEWAY_PORT": str(port),
        "BIND_HOST": "127.0.0.1",
        "SERVICES": "sqs,sns,sts",
        "LOG_LEVEL": "WARNING",
        "PERSIST_STATE": "0",
    }
    log = LOG_FILE.open("wb")
    _proc = subprocess.Popen(
        [str(python), "-m", "ministack"],
        env=env,
        cwd=tempfile.gettempdir(),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    atexit.register(_stop, _proc)
    deadline = time.monotonic() + 60
    while not port_open("127.0.0.1", port):
        if _proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ministack did not come up (see {LOG_FILE})")
        time.sleep(0.1)
    endpoint = f"http://127.0.0.1:{port}"
    _smoke(endpoint)
    return endpoint


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
        if _proc is not None:
            _stop(_proc)
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
