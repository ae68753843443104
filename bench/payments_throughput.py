"""10,000 payments through the sandbox gateway (200 ms latency, 100 charges/s limit).

Targets: done in <= 115 s (ideal 100 s; one at a time would take 2,000 s), no more 429s than
the first second's, zero double charges counted at the gateway.

The charges run the way the payments workers run them: lists of ``PAYMENT_CHARGES_PER_TASK``
(the body of a ``payments.charge_payments`` task, ``charges_run``, with up to
``PAYMENT_CHARGE_CONCURRENCY`` of a list at the gateway at once), one list at a time in each of
``PROCESSES`` processes (make run's two bulk workers have 8 between them, shared with the other
bulk queues), sharing the PostgreSQL token bucket. The SQS leg that carries each task is left out
(``pipeline.py`` measures the whole path, ``GATEWAY_LATENCY_MS=200`` for make run's sandbox).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from multiprocessing import get_context

import _env
from django.conf import settings
from django.db import connection

from payments.models import Payment, PaymentAttempt, RateLimitBucket

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
LATENCY_MS, LIMIT = 200, 100
PROCESSES = int(os.environ.get("PROCESSES", "4"))


def _charge_all(ids: list[str]) -> int:
    import django

    django.setup()
    from django.db import close_old_connections

    from payments.gateway import reset_gateway
    from payments.services import charges_run

    reset_gateway()
    per_task = settings.PAYMENT_CHARGES_PER_TASK
    lists = [[(p, 0) for p in ids[i : i + per_task]] for i in range(0, len(ids), per_task)]
    succeeded = 0
    while lists:
        close_old_connections()  # what a worker does around each task (billing_project/celery.py)
        run = charges_run(lists.pop(0), seconds=settings.PAYMENT_CHARGES_TASK_SECONDS)
        assert not (run.failed or run.crashed), run
        if run.not_started:  # sent on, as the task does
            lists.append(run.not_started)
        succeeded += run.outcomes["succeeded"]
    close_old_connections()
    return succeeded


def main() -> None:
    with _env.sandbox_gateway("--latency-ms", str(LATENCY_MS), "--rate-limit", str(LIMIT)) as url:
        settings.PAYMENT_RATE_LIMIT_PER_SECOND = LIMIT
        os.environ["PAYMENT_RATE_LIMIT_PER_SECOND"] = str(LIMIT)
        PaymentAttempt.objects.all().delete()
        Payment.objects.all().delete()
        RateLimitBucket.objects.all().delete()
        ids = _env.payments_due(N)
        connection.close()
        shares = [ids[i::PROCESSES] for i in range(PROCESSES)]
        start = time.perf_counter()
        with get_context("fork").Pool(PROCESSES) as pool:
            succeeded = sum(pool.map(_charge_all, shares))
        wall = time.perf_counter() - start
        with urllib.request.urlopen(f"{url}/v1/_stats") as resp:
            stats = json.load(resp)
        doubles = sum(1 for n in stats["charges_by_key"].values() if n > 1)
        _env.report(
            [
                (
                    "payments",
                    f"{N} in lists of {settings.PAYMENT_CHARGES_PER_TASK}, {PROCESSES} processes, up to {settings.PAYMENT_CHARGE_CONCURRENCY} of a list at the gateway at once",
                ),
                ("succeeded", str(succeeded)),
                (
                    "wall time",
                    f"{wall:.1f} s (target <= 115 s; ideal {N / LIMIT:.0f} s; one at a time "
                    f"{N * LATENCY_MS / 1000:.0f} s)",
                ),
                (
                    "throughput",
                    f"{N / wall:.1f} charges/s (gateway limit {LIMIT}/s) = {N / wall / LIMIT:.0%} of the limit",
                ),
                (
                    "429s from the gateway",
                    f"{stats['rate_limited']} (target: no more than the first second's, {LIMIT})",
                ),
                ("charges counted at the gateway", f"{stats['charges']}; keys charged twice: {doubles}"),
            ]
        )
        assert succeeded == N == stats["charges"] and doubles == 0
        PaymentAttempt.objects.all().delete()
        Payment.objects.all().delete()


if __name__ == "__main__":
    main()
