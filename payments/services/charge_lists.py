"""A list of charges (one ``payments.charge_payments`` message) with several at the gateway at
once, so that one worker process is not limited to one gateway round trip at a time.

At the sandbox's 200 ms (``make run``), a process charging one at a time makes 5 charges a
second: make run's 8 processes made 37/s against a gateway allowing 100/s. Here each charge takes
the same steps as one charged alone (services/charging.py), in list order on the task's thread and
its one database connection: wait for its rate-limit token, claim its payment, and, once the
gateway has answered, record the answer. Only the gateway call itself runs on a pool of
``PAYMENT_CHARGE_CONCURRENCY`` threads per process, so the next charge's token and claim do not
wait for the previous charge's answer. A worker process opens no more database connections than
before; each task holds at most one token reserved ahead, as before; and a payment is claimed
only when its charge goes out at once, so an invoice voided while a charge waits for its token
finds the payment unclaimed, as it would have before.

An error starting a charge stops the list there: the charges after it are not started (the task
sends them on) and the ones already at the gateway are waited for and recorded. A charge whose
claim hit a database error is the task's to retry, alone; one whose answer could not be recorded,
even on a new connection, is left "processing" for the sweep (a retry message would find it
taken), and any other error the task raises once the rest is done. A worker killed mid-list leaves
the charges it had at the gateway "processing": as for one charge, the sweep takes them up once
they are stale and asks the gateway again with the same key.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, InterfaceError

from core.db import drop_broken_connection

from ..gateway import ChargeResult
from .answers import charge_finish, charged_record
from .charging import Started, charge_send, charge_start

logger = logging.getLogger(__name__)

Charge = tuple[str, int | None]  # (payment id, dunning step)
InFlight = dict[Future[ChargeResult], tuple[Charge, Started, float]]  # float: when it was sent
# Answers are recorded together (one transaction for those that charged) once this many have come,
# or once one sent this long ago has: a list's answers come back close together, and one
# transaction for several costs about what one costs alone.
RECORD_TOGETHER = 5
GATHER_SECONDS = 0.5


def payment_charge(*, payment_id: str, step: int | None = None) -> str:
    """Charge once (rate-limited), record the attempt and its consequence. Returns the outcome.
    ``step``: the dunning step the message was sent for; a copy for a decided step is skipped.
    A list (``charges_run``) runs the same three steps, several at the gateway at once."""
    started = charge_start(payment_id=payment_id, step=step)
    if started is None:
        return "skipped"
    return charge_finish(started, charge_send(started))


@dataclass
class ListRun:
    """What became of a list: outcomes counted; charges not started (out of time, or after an
    error starting one); charges whose claim hit a database error, and the first such error;
    the first other error. Outcomes count ``unrecorded``: answers that could not be recorded."""

    outcomes: Counter[str] = field(default_factory=Counter)
    not_started: list[Charge] = field(default_factory=list)
    failed: list[Charge] = field(default_factory=list)
    error: Exception | None = None
    crashed: BaseException | None = None


def charges_run(charges: list[Charge], *, seconds: float) -> ListRun:
    """Charge each (payment id, step), up to ``PAYMENT_CHARGE_CONCURRENCY`` at the gateway at once;
    none started after ``seconds`` (the first always is). See the module."""
    deadline = time.monotonic() + seconds
    pool, slots = _pool()
    run = ListRun()
    in_flight: InFlight = {}
    for i, charge in enumerate(charges):
        _finish_done(in_flight, run, block=False)
        if not _take_slot(slots, in_flight, run):
            run.not_started = list(charges[i:])
            break
        if run.crashed is not None or (i and time.monotonic() > deadline):
            slots.release()
            run.not_started = list(charges[i:])
            break
        try:
            started = charge_start(
                payment_id=charge[0],
                step=charge[1],
                while_waiting=lambda wait: _finish_done(in_flight, run, block=False, within=wait),
            )
        except (DatabaseError, InterfaceError) as exc:
            slots.release()
            run.failed.append(charge)
            run.error = exc
            drop_broken_connection()
            run.not_started = list(charges[i + 1 :])
            break
        except Exception as exc:  # noqa: BLE001 - raised by the task once the rest is recorded
            slots.release()
            run.crashed = exc  # a soft time limit too: the charges at the gateway are recorded first
            run.not_started = list(charges[i:])  # sent on: a copy finds it claimed, if it was
            break
        if started is None:
            slots.release()
            run.outcomes["skipped"] += 1
            continue
        future = None
        try:
            future = pool.submit(_send, started, slots)
        except Exception as exc:  # noqa: BLE001 - a soft time limit, a pool shut down
            run.crashed = run.crashed or exc
        if future is None:  # claimed and not sent: the sweep takes it up once stale
            slots.release()
            run.not_started = list(charges[i + 1 :])
            break
        in_flight[future] = (charge, started, time.monotonic())
        if run.crashed is not None:  # a soft time limit just after the send: recorded below
            run.not_started = list(charges[i + 1 :])
            break
    while in_flight:
        _finish_done(in_flight, run, block=True)
    return run


def _send(started: Started, slots: threading.Semaphore) -> ChargeResult:
    """The gateway call on a pool thread; its slot is free again as soon as it returns."""
    try:
        return charge_send(started)
    finally:
        slots.release()


def _take_slot(slots: threading.Semaphore, in_flight: InFlight, run: ListRun) -> bool:
    """Wait for one of this process's gateway threads to be free (other tasks of a threads-pool
    worker share them), recording this list's answers meanwhile: a charge whose token came never
    waits for a thread, which would send it late, bunched with others' on-time charges. False: a
    soft time limit came first (no slot taken)."""
    try:
        while not slots.acquire(timeout=0.05):
            _finish_done(in_flight, run, block=False)
    except SoftTimeLimitExceeded as exc:
        run.crashed = run.crashed or exc
        return False
    return True


def _finish_done(in_flight: InFlight, run: ListRun, *, block: bool, within: float = 0.0) -> None:
    """Record the charges whose answer has come. Not ``block``: only once ``RECORD_TOGETHER`` have
    or one sent ``GATHER_SECONDS`` ago has, counting ``within``, the seconds the caller is about to
    wait (for a rate-limit token), so no answer waits unrecorded much longer than that.
    ``block``: waiting for all, for up to ``GATHER_SECONDS``, then for at least one."""
    if not in_flight:
        return
    try:
        if block:
            done, _ = wait(in_flight, timeout=GATHER_SECONDS)
            if not done:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        else:
            done, _ = wait(in_flight, timeout=0)
            oldest = time.monotonic() + within - GATHER_SECONDS
            if len(done) < RECORD_TOGETHER and not any(in_flight[f][2] < oldest for f in done):
                return
    except SoftTimeLimitExceeded as exc:  # the answers still come: the caller waits again
        run.crashed = run.crashed or exc
        return
    answered = {future: in_flight.pop(future)[:2] for future in done}
    together = {f: started for f, (_charge, started) in answered.items() if _charged(f, started)}
    if len(together) > 1:
        try:
            outcomes = charged_record([(started, f.result()) for f, started in together.items()])
        except (DatabaseError, InterfaceError) as exc:  # each is recorded alone below
            logger.warning("%d answers not recorded together (%s): recording each alone", len(together), exc)
            drop_broken_connection()
        except SoftTimeLimitExceeded as exc:  # the task ends once they are recorded, each alone
            run.crashed = run.crashed or exc
        except Exception:  # noqa: BLE001 - a bug here costs no answer: each is recorded alone below
            logger.exception("%d answers not recorded together: recording each alone", len(together))
        else:
            run.outcomes.update(outcomes)
            answered = {f: a for f, a in answered.items() if f not in together}
    for future, (charge, started) in answered.items():
        try:
            run.outcomes[charge_finish(started, future.result())] += 1
        except (DatabaseError, InterfaceError) as exc:
            logger.error(
                "charge of payment %s answered but not recorded (%s): the sweep takes it up", charge[0], exc
            )
            run.outcomes["unrecorded"] += 1
            drop_broken_connection()
        except Exception as exc:  # noqa: BLE001 - raised by the task once the rest is recorded
            run.crashed = run.crashed or exc


def _charged(future: Future[ChargeResult], started: Started) -> bool:
    """Sent, and the gateway took the money."""
    return started.sent and future.exception() is None and future.result().ok


_lock = threading.Lock()
_executor: tuple[int, ThreadPoolExecutor, threading.Semaphore] | None = None


def _pool() -> tuple[ThreadPoolExecutor, threading.Semaphore]:
    """This process's threads for gateway calls and a slot for each (made after a fork, never
    inherited from before)."""
    global _executor
    with _lock:
        if _executor is None or _executor[0] != os.getpid():
            size = max(1, settings.PAYMENT_CHARGE_CONCURRENCY)
            pool = ThreadPoolExecutor(size, thread_name_prefix="charge")
            _executor = (os.getpid(), pool, threading.Semaphore(size))
        return _executor[1], _executor[2]
