"""A list of charges (one ``payments.charge_payments`` message) run with several at the gateway at
once, so that one worker process is not limited to one gateway round trip at a time.

At the sandbox's 200 ms (``make run``), a process charging one at a time makes 5 charges a
second: make run's 8 processes made 37/s against a gateway allowing 100/s. Here each charge takes
the same three steps as one charged alone (services/charging.py), and only the middle one, the
wait for its rate-limit token and the gateway's answer, runs on a thread pool of
``PAYMENT_CHARGE_CONCURRENCY`` threads per process. The claims, the token reservations and the
records stay on the task's thread and its one database connection: a worker process opens no
more connections than before, and each charge's database work is what it was. Tokens are
reserved in list order, so the global rate limit holds as it did.

An error starting a charge stops the list there: the charges after it are not started (the task
sends them on) and the ones already at the gateway are waited for and recorded, on a new
connection if the server dropped the old one. A charge that hit a database error, starting or
recording, is the task's to retry, alone; any other error the task raises once the rest is done,
leaving that charge as one charged alone would be left. A worker killed mid-list leaves its claimed
charges "processing": as for one charge, the sweep takes them up once they are stale, and asks the
gateway again with the same key.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection

from ..gateway import ChargeResult
from .charging import Started, charge_finish, charge_send, charge_start

Charge = tuple[str, int | None]  # (payment id, dunning step)


@dataclass
class ListRun:
    """What became of a list: outcomes counted; charges not started (out of time, or after an
    error starting one); charges that hit a database error, and the first such error; the first
    other error (its charge is left as one charged alone would be, for the sweep)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    not_started: list[Charge] = field(default_factory=list)
    failed: list[Charge] = field(default_factory=list)
    error: Exception | None = None
    crashed: Exception | None = None


def charges_run(charges: list[Charge], *, seconds: float) -> ListRun:
    """Charge each (payment id, step), up to ``PAYMENT_CHARGE_CONCURRENCY`` at the gateway at once;
    none started after ``seconds`` (the first always is). See the module."""
    deadline = time.monotonic() + seconds
    limit = max(1, settings.PAYMENT_CHARGE_CONCURRENCY)
    run = ListRun()
    in_flight: dict[Future[ChargeResult], tuple[Charge, Started]] = {}
    for i, charge in enumerate(charges):
        while len(in_flight) >= limit:
            _finish_done(in_flight, run)
        if i and time.monotonic() > deadline:
            run.not_started = list(charges[i:])
            break
        try:
            started = charge_start(payment_id=charge[0], step=charge[1])
        except (DatabaseError, InterfaceError) as exc:
            _failed(run, charge, exc)
            run.not_started = list(charges[i + 1 :])
            break
        except Exception as exc:  # noqa: BLE001 - raised by the task once the rest is recorded
            run.crashed = exc
            run.not_started = list(charges[i + 1 :])
            break
        if started is None:
            run.outcomes["skipped"] += 1
            continue
        in_flight[_pool().submit(charge_send, started)] = (charge, started)
    while in_flight:
        _finish_done(in_flight, run)
    return run


def _finish_done(in_flight: dict[Future[ChargeResult], tuple[Charge, Started]], run: ListRun) -> None:
    """Record the charges whose answer has come (waiting for at least one)."""
    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
    for future in done:
        charge, started = in_flight.pop(future)
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - kept for the task to raise once the rest is recorded
            run.crashed = run.crashed or exc
            continue
        try:
            run.outcomes[charge_finish(started, result)] += 1
        except (DatabaseError, InterfaceError) as exc:
            _failed(run, charge, exc)
        except Exception as exc:  # noqa: BLE001 - raised by the task once the rest is recorded
            run.crashed = run.crashed or exc


def _failed(run: ListRun, charge: Charge, exc: Exception) -> None:
    run.failed.append(charge)
    run.error = run.error or exc
    # a connection the server dropped is closed, so the next statement opens a new one
    connection.close_if_unusable_or_obsolete()


_lock = threading.Lock()
_executor: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """This process's threads for gateway calls (made after a fork, never inherited from before)."""
    global _executor
    with _lock:
        if _executor is None or _executor[0] != os.getpid():
            size = max(1, settings.PAYMENT_CHARGE_CONCURRENCY)
            _executor = (os.getpid(), ThreadPoolExecutor(size, thread_name_prefix="charge"))
        return _executor[1]
