"""A list of charges (one ``payments.charge_payments`` message) with several at the gateway at
once, so that one worker process is not limited to one gateway round trip at a time; and a
charge alone (``payment_charge``: a backoff, a dunning step, an operator's "retry now").

At the sandbox's 200 ms (``make run``), a process charging one at a time makes 5 charges a
second: make run's 8 processes made 37/s against a gateway allowing 100/s. Here a list's charges
go in waves, on the task's thread and its one database connection: as many as there are free
gateway threads (``gateway_threads.py``) wait for their rate-limit tokens (one statement) and are
claimed together once the tokens are due (one transaction, each payment decided as one alone,
services/charging.py), then sent; answers that charged and came back together are recorded
together (services/answers.py), any other answer alone. Only the gateway call
itself runs on a pool of ``PAYMENT_CHARGE_CONCURRENCY`` threads per process, so the next charges'
tokens and claims do not wait for the previous answers. A worker process opens no more database
connections than before, and a payment is claimed only when its charge goes out at once, so an
invoice voided while a charge waits for its token finds the payment unclaimed, as it would have
before.

An error starting a wave stops the list there: the charges after it are not started (the task
sends them on, and the wave's own too unless the error was the database's) and the ones already
at the gateway are waited for and recorded. A wave whose claim hit a database error is the task's
to retry, one charge at a time (a payment whose claim keeps
failing never holds the others back); one whose answer could not be recorded, even on a new
connection, is left "processing" for the sweep (a retry message would find it taken), and any
other error the task raises once the rest is done. A worker killed mid-list leaves the charges it
had at the gateway "processing": as for one charge, the sweep takes them up once they are stale
and asks the gateway again with the same key.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, InterfaceError

from core.db import drop_broken_connection
from core.task_options import soft_limit_deferred

from .. import ratelimit
from ..gateway import TRANSIENT, ChargeResult
from . import gateway_threads
from .answers import charge_finish, charged_record
from .charging import Charge, Started, charge_send, charge_start, charges_start
from .gateway_threads import Slots, send

logger = logging.getLogger(__name__)

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
    """What became of a list: outcomes counted; charges not started (out of time, or from a wave an
    error stopped); charges whose wave's claim hit a database error, and that error; the first
    other error. Outcomes count ``unrecorded``: answers that could not be recorded."""

    outcomes: Counter[str] = field(default_factory=Counter)
    not_started: list[Charge] = field(default_factory=list)
    failed: list[Charge] = field(default_factory=list)
    error: Exception | None = None
    crashed: BaseException | None = None
    # the tries claimed and then sent, or recorded as not sent (an attempt's id): a soft time limit
    # between a wave's claim and its sends records the others as not sent
    settled: set[int] = field(default_factory=set)


def charges_run(charges: list[Charge], *, seconds: float, one_at_a_time: bool = False) -> ListRun:
    """Charge each (payment id, step), up to ``PAYMENT_CHARGE_CONCURRENCY`` at the gateway at once,
    claimed together as many as there are free gateway threads (at most ``ratelimit.burst``; one
    at a time if ``one_at_a_time``); none started after ``seconds`` (the first always is). See the
    module."""
    deadline = time.monotonic() + seconds
    pool, semaphore = gateway_threads.pool()
    slots = Slots(semaphore)
    burst = ratelimit.burst(settings.PAYMENT_RATE_LIMIT_PER_SECOND)
    most = 1 if one_at_a_time else max(1, int(min(burst, settings.PAYMENT_CHARGE_CONCURRENCY)))
    run = ListRun()
    in_flight: InFlight = {}
    i = 0
    claimed = None
    try:
        while i < len(charges):
            _finish_done(in_flight, run, block=False)
            if not _take_slot(slots, in_flight, run):
                run.not_started = list(charges[i:])
                break
            slots.more(min(most, len(charges) - i) - 1)
            if run.crashed is not None or (i and time.monotonic() > deadline):
                run.not_started = list(charges[i:])
                break
            wave, rest = charges[i : i + slots.held], list(charges[i + slots.held :])
            i += len(wave)
            try:
                claimed = charges_start(
                    wave, while_waiting=lambda seconds: _finish_meanwhile(in_flight, run, seconds)
                )
            except (DatabaseError, InterfaceError) as exc:
                run.failed.extend(wave)
                run.error = exc
                drop_broken_connection()
                run.not_started = rest
                break
            except Exception as exc:  # noqa: BLE001 - raised by the task once the rest is recorded
                run.crashed = exc  # a soft time limit too: the charges at the gateway are recorded first
                # a soft time limit as they were claimed: those claimed are recorded not sent (due again)
                _not_sent(getattr(exc, "claimed", []), exc, run)
                run.not_started = [*wave, *rest]  # sent on: a copy finds them claimed, if they were
                break
            with soft_limit_deferred():  # its submits never wait: the wave goes whole, or as it can
                sent = _submit(pool, slots, wave, claimed.started, in_flight, run)
            slots.release_held()  # those of the charges skipped: the next wave takes what it needs
            _give_back(claimed.unused_tokens)
            if skipped := claimed.started.count(None):
                run.outcomes["skipped"] += skipped
            if not sent or run.crashed is not None:  # a soft time limit just after: recorded below
                run.not_started = rest
                break
    except SoftTimeLimitExceeded as exc:  # between steps: the charges at the gateway are recorded
        run.crashed = run.crashed or exc
        run.not_started = list(charges[i:])
        if claimed is not None:  # struck between a wave's claim and its sends: those never went
            _not_sent(
                [s for s in claimed.started if s is not None and s.attempt_id not in run.settled], exc, run
            )
    finally:
        try:
            slots.release_held()  # whatever stopped the list, the gateway threads it held are free
        except SoftTimeLimitExceeded as exc:  # struck as it freed them: the answers are recorded first
            run.crashed = run.crashed or exc
            run.not_started = run.not_started or list(charges[i:])
    while in_flight:
        _finish_done(in_flight, run, block=True)
    return run


def _submit(
    pool: ThreadPoolExecutor,
    slots: Slots,
    wave: list[Charge],
    started: list[Started | None],
    in_flight: InFlight,
    run: ListRun,
) -> bool:
    """Send each claimed charge of a wave on the gateway threads, each taking one of the slots the
    list holds (the caller defers a soft time limit until the wave is sent: nothing here waits).
    False if a send could not be submitted (a pool shut down): that one and those after it never
    reached the pool, and are recorded as not sent (``_not_sent``)."""
    for n, (charge, s) in enumerate(zip(wave, started, strict=True)):
        if s is None:
            continue
        try:
            future = pool.submit(send, s, slots.next())
        except Exception as exc:  # noqa: BLE001 - a pool shut down
            run.crashed = run.crashed or exc
            _not_sent([t for t in started[n:] if t is not None], exc, run)
            return False
        run.settled.add(s.attempt_id)
        slots.hand_over()
        in_flight[future] = (charge, s, time.monotonic())
    return True


def _not_sent(started: list[Started], why: BaseException, run: ListRun) -> None:
    """Record charges claimed but never sent as such, as the rate limiter's held-back ones are: left
    open, their tries would read as sent and unanswered (``charging.outcome_unknown``), so that the
    sweep would "ask again" what the gateway never saw, a first charge of an invoice maybe voided
    since. One that cannot be recorded is left to the sweep."""
    for s in started:
        run.settled.add(s.attempt_id)
        try:
            outcome = charge_finish(
                replace(s, sent=False),
                ChargeResult(False, error_class=TRANSIENT, message=f"not sent: {why!r}"),
            )
        except Exception:  # noqa: BLE001 - the sweep takes it once stale
            logger.exception("charge of payment %s not sent and not recorded", s.payment_id)
            run.outcomes["unrecorded"] += 1
        else:
            run.outcomes[outcome] += 1


def _give_back(tokens: int) -> None:
    """Give back the tokens of charges not claimed, once the others are sent. A token not given
    back only makes the next charges wait a little: a failure here is logged, not raised."""
    if not tokens:
        return
    try:
        ratelimit.give_back("gateway", tokens)
    except (DatabaseError, InterfaceError) as exc:
        logger.warning("%d rate-limit tokens not given back (%s)", tokens, exc)
        drop_broken_connection()


def _take_slot(slots: Slots, in_flight: InFlight, run: ListRun) -> bool:
    """Wait for one of this process's gateway threads to be free (other tasks of a threads-pool
    worker share them), recording this list's answers meanwhile: a charge whose token came never
    waits for a thread, which would send it late, bunched with others' on-time charges. False: a
    soft time limit came first (no slot taken)."""
    try:
        while not slots.take(timeout=0.05):
            _finish_done(in_flight, run, block=False)
    except SoftTimeLimitExceeded as exc:
        run.crashed = run.crashed or exc
        return False
    return True


def _finish_done(in_flight: InFlight, run: ListRun, *, block: bool) -> None:
    """Record the charges whose answer has come. Not ``block``: only once ``RECORD_TOGETHER`` have
    or one sent ``GATHER_SECONDS`` ago has. ``block``: waiting for all, for up to
    ``GATHER_SECONDS``, then for at least one."""
    if not in_flight:
        return
    try:
        if block:
            done, _ = wait(in_flight, timeout=GATHER_SECONDS)
            if not done:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        else:
            done, _ = wait(in_flight, timeout=0)
            oldest = time.monotonic() - GATHER_SECONDS
            if len(done) < RECORD_TOGETHER and not any(in_flight[f][2] < oldest for f in done):
                return
    except SoftTimeLimitExceeded as exc:  # the answers still come: the caller waits again
        run.crashed = run.crashed or exc
        return
    _record_done(done, in_flight, run)


def _finish_meanwhile(in_flight: InFlight, run: ListRun, seconds: float) -> None:
    """The list is about to wait ``seconds`` for its next tokens: record the answers as they come
    meanwhile (together, at most ``GATHER_SECONDS`` apart), none kept in memory through the wait."""
    end = time.monotonic() + seconds
    try:
        while in_flight and (left := end - time.monotonic()) > 0:
            done, _ = wait(in_flight, timeout=min(left, GATHER_SECONDS))
            if done:
                _record_done(done, in_flight, run)
    except SoftTimeLimitExceeded as exc:  # no claim after it: the charges waiting are sent on
        run.crashed = run.crashed or exc
        raise


def _record_done(done: set[Future[ChargeResult]], in_flight: InFlight, run: ListRun) -> None:
    """Record these answers: those that charged together, each other one alone."""
    answered = {future: in_flight.pop(future)[:2] for future in done}
    together = {f: started for f, (_charge, started) in answered.items() if _took_money(f, started)}
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


def _took_money(future: Future[ChargeResult], started: Started) -> bool:
    """Sent, and the gateway took the money."""
    return started.sent and future.exception() is None and future.result().ok
