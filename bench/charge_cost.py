"""CPU per charge in one worker process: what collecting costs us, apart from the gateway.

    cd bench && ../.venv/bin/python charge_cost.py [N]      # default 3,000 payments

Charges N payments the way a worker process runs a ``payments.charge_payments`` task's body
(``charges_run``, lists of ``PAYMENT_CHARGES_PER_TASK``, up to ``PAYMENT_CHARGE_CONCURRENCY`` at
the gateway at once) against the sandbox gateway answering at once and allowing any rate, with
the rate limiter set high enough never to wait, so nothing but CPU and the database paces it.
Baseline, same run, same process: the same number of gateway calls alone (the HTTP call a charge
makes, from the same thread pool, no database). Prints the CPU of this process per charge (all
its threads: the task's and the gateway calls'), the baseline's per call, and their ratio; the
rest of a charge's cost is PostgreSQL's and, in a stack, the relay's and invoicing's for its
``payment.succeeded`` (``pipeline.py`` measures the whole).
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import _env
from django.conf import settings
from django.db import close_old_connections

from events.models import OutboxEvent
from payments.gateway import gateway
from payments.services import charges_run

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3_000
RATE = 1_000_000  # the limiter never waits: CPU and the database pace the charges


def charged(ids: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) to charge these as the workers do."""
    per_task = settings.PAYMENT_CHARGES_PER_TASK
    lists = [[(p, 0) for p in ids[i : i + per_task]] for i in range(0, len(ids), per_task)]
    cpu, start = time.process_time(), time.perf_counter()
    for charges in lists:
        close_old_connections()  # what a worker does around each task
        run = charges_run(charges, seconds=settings.PAYMENT_CHARGES_TASK_SECONDS)
        assert run.outcomes == {"succeeded": len(charges)}, run
    return time.process_time() - cpu, time.perf_counter() - start


def called(n: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) for n gateway calls alone, lists of the same size on as many threads."""
    per_task, threads = settings.PAYMENT_CHARGES_PER_TASK, settings.PAYMENT_CHARGE_CONCURRENCY

    def call(i: int) -> None:
        assert (
            gateway().charge(idempotency_key=f"plain-{i}", amount_minor=1000, currency="EUR", customer="c").ok
        )

    cpu, start = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for i in range(0, n, per_task):
            list(pool.map(call, range(i, min(n, i + per_task))))
    return time.process_time() - cpu, time.perf_counter() - start


def main() -> None:
    with _env.sandbox_gateway():  # answering at once, no rate limit
        settings.PAYMENT_RATE_LIMIT_PER_SECOND = RATE
        _env.clean(OutboxEvent)
        charged(_env.payments_due(100, "warm"))  # connections, the pool, the first statements
        ids = _env.payments_due(N)
        base_cpu, base_wall = called(N)
        cpu, wall = charged(ids)
        ms = lambda seconds: f"{seconds / N * 1000:.2f} ms"  # noqa: E731
        _env.report(
            [
                (
                    "charges",
                    f"{N:,} in lists of {settings.PAYMENT_CHARGES_PER_TASK}, up to "
                    f"{settings.PAYMENT_CHARGE_CONCURRENCY} at the gateway at once, one process",
                ),
                ("CPU per charge", f"{ms(cpu)} ({N / wall:,.0f} charges/s)"),
                ("baseline: the call alone", f"{ms(base_cpu)} ({N / base_wall:,.0f} calls/s)"),
                ("ratio", f"{cpu / base_cpu:.1f}x the gateway call alone"),
            ]
        )
        _env.clean(OutboxEvent)


if __name__ == "__main__":
    main()
