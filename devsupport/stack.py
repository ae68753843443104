"""The parts `make run` starts, and how: the SNS/SQS endpoint on a stable port, then the sandbox
gateway, the database's migrations and topology, the Celery workers, beat and the web server,
each said once at start-up (scripts/devstack.py drives them; devsupport/supervisor.py runs them).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .endpoint import LocalEndpoint, local_endpoint
from .net import port_open, port_or_free
from .supervisor import Child, log
from .waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        wait_until(check, timeout, what)
    except TimeoutError:
        raise SystemExit(f"[devstack] {what} did not come up within {timeout:.0f}s") from None


# The SNS/SQS endpoint's port when it is free, so AWS_ENDPOINT_URL stays the same between runs
# (LocalStack's usual port: tools pointed at a local AWS try it first).
DEFAULT_ENDPOINT_PORT = 4566


def start_endpoint(data_dir: Path) -> tuple[LocalEndpoint, str]:
    """``LOCAL_ENDPOINT`` (ministack by default, chosen by bench/endpoints.py; or moto) on
    ``LOCAL_ENDPOINT_PORT`` (default 4566, any free port if taken), started. ministack keeps its
    state in ``data_dir`` so a clean restart finds the queued messages again; when it cannot be
    installed or started, moto stands in and the log says why. Returns it and what it is."""
    kind = os.environ.get("LOCAL_ENDPOINT", "ministack")
    if kind not in ("ministack", "moto"):
        raise SystemExit(f"[devstack] LOCAL_ENDPOINT={kind!r}: use ministack or moto")
    wanted = int(os.environ.get("LOCAL_ENDPOINT_PORT") or DEFAULT_ENDPOINT_PORT)
    port = port_or_free(wanted)
    if port != wanted:
        log(f"SNS/SQS: port {wanted} is taken; using {port} this time")
    if kind == "ministack":
        endpoint = local_endpoint("ministack", port=port, state_dir=data_dir / "ministack")
        try:
            endpoint.start()
            return endpoint, f"ministack (queues and messages kept in {data_dir / 'ministack'})"
        except Exception as exc:  # noqa: BLE001 - any failure: moto stands in, and we say why
            endpoint.stop()
            log(f"ministack could not start ({type(exc).__name__}: {exc}); using moto instead")
            port = port_or_free(wanted)
    endpoint = local_endpoint("moto", port=port)
    endpoint.start()
    return endpoint, "moto server (in memory: queued messages are lost when it stops)"


def manage(env: dict[str, str], *args: str) -> None:
    """Run a manage.py command to its end: in its own session, so a Ctrl-C meanwhile reaches only
    the supervisor, which stops once it is done. MANAGE_VIA: the hints it prints (operator_ensure's)
    read `make manage ARGS="..."`."""
    subprocess.run(
        [PY, "manage.py", *args],
        cwd=ROOT,
        env={**env, "MANAGE_VIA": "make"},
        check=True,
        start_new_session=True,
    )


# Celery says each start-up once, here: no banner (-q), Django's checks ran in `migrate` already,
# and the superuser warning is one line of ours instead of a paragraph per process.
CELERY = [
    *(PY, "-W", "ignore:You're running the worker with superuser"),
    *("-m", "celery", "-A", "billing_project"),
]
CELERY_QUIET = ["-q", "--skip-checks"]
# The web log without what needs no reading: a static file served or found unchanged (a line each
# per page view), and runserver's banner (the admin's address is said once everything is up). Its
# errors ("That port is already in use") still show.
WEB_QUIET = re.compile(
    r'"GET /static/\S* HTTP/[\d.]+" (200|304) '
    r"|^(Django version |Starting development server at |Quit the server with |\w+ \d{1,2}, \d{4} - \d)"
)


def start_gateway(env: dict[str, str], port: int) -> Child:
    """The sandbox payment gateway on ``port``, answering."""
    gateway = Child(
        "gateway",
        [
            *(PY, "-m", "devsupport.sandbox_gateway", "--port", str(port)),
            *("--latency-ms", "200", "--rate-limit", "100", "--soft-decline-rate", "0.05"),
        ],
        env,
        cwd=ROOT,
        what="the sandbox payment gateway (200 ms a charge, 100 charges/s)",
    )
    wait_for(lambda: port_open("127.0.0.1", port), 30, "sandbox gateway")
    return gateway


def prepare(env: dict[str, str]) -> None:
    """Migrations, the messaging topology and the operator account (each idempotent)."""
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "messaging_provision")
    manage(env, "operator_ensure", "--username", "operator")


@dataclass(frozen=True)
class Worker:
    """One Celery worker of the local stack: its options after ``worker`` and what it is for."""

    name: str
    options: tuple[str, ...]
    what: str


# The workers of `make run` (and of the benchmarks, bench/_stack.py). Two alike for the bulk work,
# each serving every bulk queue and running every push consumer: a push consumer runs in its
# worker's main process, so two workers give each consumer two interpreter locks, the machine's
# two cores (pipeline.py, 10,000 agreements: payments created at 31.3-32.4 s this way; 41-50 s
# with a worker per context, whose single consumer process each stage waits on). In production,
# scale out the same way: more hosts, or a worker per context (README, "Running against AWS").
# Charges wait on the gateway (200 ms each with make run's sandbox): 8 processes in all charge at
# most about 40/s, fewer by the time a worker waits between fetches (CELERY_SQS_POLLING_INTERVAL).
WORKERS = (
    *(
        Worker(
            f"worker-{n}",
            # "all": a consumer added later (README, "A new consumer") is polled without an edit here
            ("-Q", "default,events,invoicing,payments", "--concurrency", "4", "--event-consumers", "all"),
            "Celery: queues default, events, invoicing, payments; 4 processes; every push consumer",
        )
        for n in (1, 2)
    ),
    # Operations on a path of their own: monitoring (and the alerts it publishes) never waits
    # behind a daily run's chunks or 10,000 charges on the workers above.
    Worker(
        "ops",
        ("-Q", "monitoring", "--pool", "threads", "--concurrency", "1", "--event-consumers", "none"),
        "Celery: queue monitoring; 1 thread",
    ),
)


def background_env(env: dict[str, str]) -> dict[str, str]:
    """The workers' and beat's environment: ``DEBUG`` off unless the environment sets it.
    settings.dev turns it on for the development server's error pages and static files; in a
    worker it wraps every statement in Django's debug cursor, which formats each one's SQL and keeps
    the last 9,000 per connection for nobody to read: a cost in every charge and message."""
    return {**env, "DEBUG": env.get("DEBUG", "false")}


def start_services(env: dict[str, str], web_port: int, ready: dict[str, threading.Event]) -> list[Child]:
    """The Celery workers (``ready[name]`` set when each says it is), beat and the web server."""
    if os.geteuid() == 0:
        log("running as root: Celery advises against it outside a container (said once here)")

    def when_ready(name: str) -> Callable[[str], None]:
        return lambda line: ready[name].set() if " ready." in line else None

    return [
        *(
            Child(
                w.name,
                [*CELERY, *CELERY_QUIET, "worker", "-l", "INFO", *w.options, "-n", f"{w.name}@%h"],
                background_env(env),
                cwd=ROOT,
                celery_worker=True,
                on_line=when_ready(w.name),
                what=w.what,
            )
            for w in WORKERS
        ),
        Child(
            "beat",
            [
                *CELERY,
                *CELERY_QUIET,
                *("beat", "-l", "INFO", "--pidfile="),
                *("--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"),
            ],
            background_env(env),
            cwd=ROOT,
            what="celery beat, the database scheduler",
        ),
        Child(
            "web",
            [PY, "manage.py", "runserver", f"127.0.0.1:{web_port}", "--noreload", "--skip-checks"],
            {**env, "DJANGO_RUNSERVER_HIDE_WARNING": "true"},
            cwd=ROOT,
            hide=WEB_QUIET.search,
            what="Django's development server",
        ),
    ]
