"""The relay: runs passes (relay_pass.py: claim, publish, mark) until nothing is due.

- A relay working through a backlog runs ``OUTBOX_RELAY_LANES`` passes at once
  (``relay_pending``), one lane's claim and mark overlapping another's publishing; one that may
  hold (holding.py) leaves out the topics whose consumer's queue is too deep.
- The task runs one relay at a time (``relay_exclusive``, a PostgreSQL advisory
  lock): a burst of kicks from many processes costs one relay, not one each. The
  relay that holds the lock looks again after releasing it, so a row committed
  while it was finishing is not left for the sweep.
- A relay's sessions end when idle for OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS (``_idle_bounded``),
  so a relay that stops answering (a frozen host, a network cut) lets go of the lock and of the
  rows it claimed then, not when the server's TCP keepalive gives up on it (about two hours).
  If it comes back, its pass fails (rows it published and did not mark are published again:
  consumers take a duplicate as such).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection

from core.per_process import PerProcess

from .. import topology
from . import holding
from .claiming import due_rows_exist
from .kicker import RELAY, kick_hold, kick_release, kick_released_on_error, kicker
from .relay_pass import RelayResult, relay_once

logger = logging.getLogger(__name__)


RELAY_LOCK = "events.relay"


def relay_exclusive(*, max_seconds: float | None = None) -> RelayResult | None:
    """``relay_pending`` unless another relay is running (then None: that one carries on).

    Holds a session advisory lock while relaying; after releasing it, looks again for due rows,
    since a kick refused while this relay was finishing may have been about them, and goes on
    while there are some. It holds the kick marker (kicker.py) while it runs and clears it only
    as it stops, before its last look: kicks meanwhile are about rows a later pass of it takes,
    so none is sent (a stream of commits during a relay costs no task, not one per process per
    pass); a commit after the clear kicks again. A relay refused the lock leaves the marker to the
    running one; one that runs out of time with rows due kicks a relay task for them."""
    max_seconds = settings.OUTBOX_RELAY_MAX_SECONDS if max_seconds is None else max_seconds
    deadline = time.monotonic() + max_seconds
    total = RelayResult()
    with kick_released_on_error(RELAY):  # a failed relay looks for nothing more
        while True:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [RELAY_LOCK])
                if not cur.fetchone()[0]:
                    return None if total.batches == 0 else total
                try:
                    _idle_bounded(cur)
                    kick_hold(RELAY)  # this relay looks again before it stops: kicks can wait
                    step = relay_pending(max_seconds=max(0.0, deadline - time.monotonic()))
                except BaseException:
                    _let_go(cur, failing=True)  # what failed is what the task reports
                    raise
                _let_go(cur, failing=False)
            total += step
            if step.held_out:  # a consumer is stopped or far behind: the next kick or sweep goes on
                kick_release(RELAY)
                return total
            # After a failed pass too: a kick refused meanwhile may be about a new row.
            untried_only = bool(step.failed)
            out_of_time = time.monotonic() > deadline
            if not out_of_time and due_rows_exist(untried_only=untried_only):
                continue
            kick_release(RELAY)  # stopping: kicks from now on are about rows this relay will not see
            if not due_rows_exist(untried_only=untried_only):
                return total
            if out_of_time:
                # Rows due, some maybe committed while kicks waited for this relay: one more relay
                # task takes them over, not the sweep.
                kicker.request()
                return total


def _idle_bounded(cur: Any) -> None:
    """End this session if it stays idle (in a transaction or not) OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS:
    the server's own clock, which a frozen or cut-off relay cannot hold back. (A pass's publishing
    stops in time for it: sns.publish_seconds.)"""
    if settings.OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS <= 0:
        return
    ms = str(settings.OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS * 1000)
    cur.execute(
        "SELECT set_config('idle_session_timeout', %s, false), "
        "set_config('idle_in_transaction_session_timeout', %s, false)",
        [ms, ms],
    )


def _let_go(cur: Any, *, failing: bool) -> None:
    """Release the relay's lock and the session's idle timeouts. A session the server ended (idle
    too long: the relay stopped answering) let go of both already: said so, and raised only when
    nothing else failed (this connection cannot go on)."""
    try:
        cur.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [RELAY_LOCK])
        cur.execute("RESET idle_session_timeout; RESET idle_in_transaction_session_timeout")
    except (DatabaseError, InterfaceError) as exc:
        logger.warning(
            "relay: its database session was ended (idle over OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS=%s, or "
            "dropped), and with it the relay's lock: another relay takes over (%s)",
            settings.OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS,
            exc,
        )
        if not failing:
            raise


def relay_pending(*, max_seconds: float | None = None, limit: int | None = None) -> RelayResult:
    """Publish everything due, pass after pass, until none is left or time is up. A pass that
    follows a full one (a backlog) leaves out the topics that feed a consumer's queue deeper than
    the hold's depth (holding.py, a local emulator's setting); once only theirs are left it waits
    for the queue, publishing the others' meanwhile. A hold that runs out publishes one pass of
    the held topics' rows, and returns ``held_out`` unless other topics' rows are due.

    Unless it may hold, a full claim (a backlog: the pass's rows are not published yet, so a
    burst's other lanes start as its first pass does) starts ``OUTBOX_RELAY_LANES`` - 1 more lanes of
    these passes, each in a thread of its own with its own connection and transaction, their
    claims skipping the rows another lane holds, all sharing the publishing threads: while one lane
    claims or marks its rows (a quarter of a 500-row pass), another's batches keep those threads
    busy. A pass with failures (an endpoint refusing or throttling) ends every lane after the pass
    it is in, as it ends a relay of one lane: a lane started by that pass's full claim publishes
    at most one pass more. Returns once every lane has, with their results added up."""
    max_seconds = settings.OUTBOX_RELAY_MAX_SECONDS if max_seconds is None else max_seconds
    deadline = time.monotonic() + max_seconds
    limit = limit or settings.OUTBOX_RELAY_BATCH_SIZE
    lanes: list[Future[RelayResult]] = []
    ended = RelayResult()  # of lanes that ended while this one went on
    stop = threading.Event()  # a lane failed or raised: the others end after the pass they are in

    def backlog_found() -> None:
        nonlocal ended
        if settings.OUTBOX_RELAY_HOLD_DEPTH > 0:  # a relay that may hold is paced by its consumers
            return
        if lanes and all(lane.done() for lane in lanes):  # (one that found nothing left to claim)
            for lane in lanes:
                ended += lane.result()
            lanes.clear()
        if not lanes:
            pool = _lanes.get()
            lanes.extend(
                pool.submit(_lane, deadline, limit, stop) for _ in range(settings.OUTBOX_RELAY_LANES - 1)
            )

    try:
        total = _passes(deadline, limit, backlog_found, stop)
        _wait_answering(lanes)  # (its keep-alive may fail: then the lanes are stopped too)
    except BaseException as failed:
        stop.set()
        wait(lanes)  # none outlives this relay (its caller lets go of the relay's lock next)
        for lane in lanes:
            if lane.exception() not in (None, failed):  # (a lane's own error, raised here, once)
                logger.error("relay: a lane failed too", exc_info=lane.exception())
        raise
    for lane in lanes:
        total += lane.result()
    total += ended
    return total


def _wait_answering(lanes: list[Future[RelayResult]]) -> None:
    """Wait for the other lanes, which may go on until the relay's time is up and a pass more,
    telling the server now and then that this session (the lock's, idle meanwhile) is alive: its
    idle timeout is for a relay that stopped answering, not one waiting for its lanes."""
    if settings.OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS <= 0:
        wait(lanes)
        return
    every = max(0.5, settings.OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS / 4)
    while lanes and wait(lanes, timeout=every).not_done:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")


# The threads of a relay's other lanes (a forked child makes its own: core/per_process.py).
_lanes = PerProcess(lambda: ThreadPoolExecutor(max(1, settings.OUTBOX_RELAY_LANES - 1), "outbox-relay-lane"))


def _lane(deadline: float, limit: int, stop: threading.Event) -> RelayResult:
    """Another lane's passes, in its thread, until none is left, time is up or ``stop`` is set (a
    lane that starts late, behind another relay's in this process, may find it so). Its connection
    is closed as it ends: a thread kept between relays would hold it idle (and a test database's
    teardown would find it open)."""
    try:
        if stop.is_set() or time.monotonic() > deadline:
            return RelayResult()
        with connection.cursor() as cur:
            _idle_bounded(cur)  # (closed as the lane ends: nothing to reset)
        return _passes(deadline, limit, None, stop)
    finally:
        connection.close()


def _passes(
    deadline: float, limit: int, backlog_found: Callable[[], None] | None, stop: threading.Event | None = None
) -> RelayResult:
    """One lane's passes (``relay_pending``); ``backlog_found`` is called at each full claim, and
    no pass starts once ``stop`` is set, which a pass with failures sets."""
    total = RelayResult()
    hold = holding.Hold(deadline)
    backlog = False  # the last pass was full, or held topics' rows wait: only then may a pass hold
    while True:
        held = holding.held_producers(hold.look()) if backlog else frozenset()
        step = relay_once(
            limit=limit, skip_producers=held, claimed_full=backlog_found, relay_deadline=deadline
        )
        total += step
        if step.published:
            holding.forget()  # the next look reads the depths this pass changed
        if _lane_ends(step, deadline, stop):
            return total
        if not (held and due_rows_exist(producers=held)):  # no row waits for a queue
            hold.reset()
            if not step.published:
                return total
            backlog = step.published + step.not_sent >= limit  # (a full claim, sent or not)
            continue
        backlog = True
        # Held topics' rows wait: after a full pass of the others' the next pass comes at once,
        # otherwise (only held topics' rows are left) after a step's wait for the queue.
        if not hold.ran_out(wait=step.published < limit, held=held):
            continue
        # The hold ran out: one pass of the held topics' rows (the others' are not left waiting:
        # the loop goes on with them, if any are due).
        out = relay_once(
            limit=limit, skip_producers=[p for p in topology.TOPICS if p not in held], relay_deadline=deadline
        )
        total += out
        if out.published:
            holding.forget()
        hold.reset()
        ends = _lane_ends(out, deadline, stop)  # (a hold's wait ends by the deadline: no pass after it)
        if not due_rows_exist(skip_producers=held):  # nothing else to do: the sweep goes on
            total.held_out = True
            return total
        if ends:
            return total


def _lane_ends(step: RelayResult, deadline: float, stop: threading.Event | None) -> bool:
    """Whether a lane starts no pass after ``step``: it failed (an endpoint failing this lane's calls
    fails the others': ``stop`` is set, all end), time is up, or another lane's failed."""
    if step.failed and stop is not None:
        stop.set()
    return bool(step.failed) or time.monotonic() > deadline or (stop is not None and stop.is_set())
