"""What a worker's task pays for its database connection: a new one per task (what Celery's Django
fixup did) against one kept and checked around each task (billing_project/celery.py).

    cd bench && ../.venv/bin/python task_connection.py [N]      # default 300 tasks each way

Each "task" is the first statement of payments' charge claim (a SELECT ... FOR UPDATE in a
transaction), run the way a worker process runs it, N times each way, interleaved in rounds of
20. CPU is counted on both sides: this process's, and PostgreSQL's (the backends' own, and the
postmaster's forks with the backends it reaped: /proc, so the server must run on this machine).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import _env
from celery import states
from django.db import close_old_connections, connection, connections, transaction

from billing_project.celery import after_task, before_task
from payments.models import Payment

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
HZ = os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process here, reaped children included (utime, stime,
    cutime, cstime of each)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"postgres" not in (proc / "cmdline").read_bytes():
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / HZ
    return total


def claim() -> None:
    with transaction.atomic():
        Payment.objects.select_for_update().filter(pk="00000000-0000-0000-0000-000000000000").first()


def task_closing() -> None:  # Celery's fixup: close before and after every task
    connections.close_all()
    claim()
    connections.close_all()


def task_keeping() -> None:  # this project's signal handlers
    before_task()
    claim()
    after_task(state=states.SUCCESS)


def measure(fn, n: int) -> tuple[float, float, float]:  # noqa: ANN001 - a task body
    pg0, cpu0, t0 = postgres_cpu(), time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    time.sleep(0.2)  # the last backends exit and are reaped
    return postgres_cpu() - pg0, time.process_time() - cpu0, time.perf_counter() - t0 - 0.2


def main() -> None:
    connections.settings["default"]["CONN_MAX_AGE"] = 60  # the workers' default (dev and prod)
    close_old_connections()
    totals = {task_closing: [0.0, 0.0, 0.0], task_keeping: [0.0, 0.0, 0.0]}
    for _ in range(max(1, N // 20)):
        for fn in totals:
            for i, v in enumerate(measure(fn, 20)):
                totals[fn][i] += v
    connection.close()
    n = max(1, N // 20) * 20
    (pg_c, me_c, wall_c), (pg_k, me_k, wall_k) = (totals[task_closing], totals[task_keeping])
    ms = lambda s: f"{s / n * 1000:.2f} ms"  # noqa: E731
    _env.report(
        [
            ("tasks each way", f"{n}"),
            (
                "connection kept (now)",
                f"PostgreSQL {ms(pg_k)} CPU, worker {ms(me_k)} CPU, {ms(wall_k)} wall per task",
            ),
            (
                "new connection per task",
                f"PostgreSQL {ms(pg_c)} CPU, worker {ms(me_c)} CPU, {ms(wall_c)} wall per task",
            ),
            ("saved per task", f"{(pg_c + me_c - pg_k - me_k) / n * 1000:.2f} ms of CPU in all"),
        ]
    )


if __name__ == "__main__":
    main()
