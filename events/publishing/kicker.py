"""Kickers: after a commit, ask for a run of a draining task without waiting (the outbox relay
after a commit that recorded events; payments' charge dispatch after one that opened payments).

Kicks coalesce twice. In a process, a daemon thread sends at most one per
``OUTBOX_KICK_MIN_INTERVAL_SECONDS``. Across processes (every worker child, web process and
command kicks), a row in ``events_relaykick`` (one per kicker, by its ``name``: ``relay``,
``payments.charges``) says a task will look for due rows later: one was sent, or one is running
(``kick_hold``). A kicker claims it with one conditional upsert before sending and sends nothing
while it is held, and the running task clears it as it stops, before its last look
(``kick_release``). Nothing is lost by skipping: the task waiting or running takes every row
committed before that last look, and a row committed after it finds the marker cleared and kicks
again. A claim whose send failed is given back; one whose task was lost goes stale after
``OUTBOX_KICK_PENDING_SECONDS``; the periodic sweep does whatever a lost kick was about. Without
this, N processes each sending one kick per interval queued ~1,400 relay tasks ahead of 5,000
charges on a two-process worker.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from core.backoff import backoff

from ..models import RelayKick

logger = logging.getLogger(__name__)

RELAY = "relay"  # the marker's row: one relay (RELAY_LOCK) for the whole outbox
# A kicker thread keeps its database connection (kick_claim's) this long after its last send: in a
# stream of commits a process kicks every OUTBOX_KICK_MIN_INTERVAL_SECONDS or so, and a connection
# made afresh for each kick cost more than the kick (about 10 ms of PostgreSQL's CPU, 3 of ours).
KEEP_CONNECTION_SECONDS = 10.0


def kick_claim(name: str) -> bool:
    """Claim the right to send ``name``'s task: True unless one sent by any process, or one
    running, holds the marker (``kick_hold``). Fails open: a database that does not answer
    here costs a kick too many, never one too few."""
    try:
        close_old_connections()  # this runs in the kicker's own long-lived thread
        return kick_hold(name)
    except DatabaseError as exc:
        logger.warning("could not read the %s kick marker (%s); kicking anyway", name, exc)
        connection.close()
        return True


def kick_hold(name: str) -> bool:
    """Set the marker unless it is set less than ``OUTBOX_KICK_PENDING_SECONDS`` ago: by a kicker
    about to send a relay task, or by a relay running, which looks for due rows again before it
    stops. True if this call set it."""
    table = RelayKick._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            f'INSERT INTO "{table}" AS k (name, sent_at) VALUES (%s, clock_timestamp()) '
            "ON CONFLICT (name) DO UPDATE SET sent_at = EXCLUDED.sent_at "
            "WHERE k.sent_at IS NULL OR k.sent_at < clock_timestamp() - make_interval(secs => %s) "
            "RETURNING 1",
            [name, settings.OUTBOX_KICK_PENDING_SECONDS],
        )
        return cur.fetchone() is not None


def kick_defer(name: str, seconds: float) -> None:
    """A task sent with a countdown of ``seconds`` will look for due rows then: hold the marker
    until it runs (and ``OUTBOX_KICK_PENDING_SECONDS`` more, should it be lost)."""
    table = RelayKick._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            f'INSERT INTO "{table}" AS k (name, sent_at) '
            "VALUES (%s, clock_timestamp() + make_interval(secs => %s)) "
            "ON CONFLICT (name) DO UPDATE SET sent_at = EXCLUDED.sent_at",
            [name, seconds],
        )


def kick_release(name: str) -> None:
    """A relay (or dispatch) is stopping and about to look for rows one last time: kicks from now
    on are about rows it will not see, so they go."""
    with connection.cursor() as cur:  # (run as every relay stops: not built by the ORM each time)
        cur.execute(
            f'UPDATE "{RelayKick._meta.db_table}" SET sent_at = NULL WHERE name = %s AND sent_at IS NOT NULL',
            [name],
        )


@contextlib.contextmanager
def kick_released_on_error(name: str) -> Iterator[None]:
    """Around a running task that holds the marker: a task that fails looks for nothing more, so
    the marker is cleared and later commits kick again (not left to go stale)."""
    try:
        yield
    except Exception:
        with contextlib.suppress(DatabaseError):
            kick_release(name)
        raise


def _kick_given_back(name: str) -> None:
    try:
        kick_release(name)
    except DatabaseError:  # it goes stale instead
        connection.close()


class Kicker:
    """After a commit, ask for a run of ``task`` without making the committer wait.

    ``request()`` only sets a flag (well under a microsecond); a daemon thread
    per process sends one ``task`` per wake-up, at most one per
    ``OUTBOX_KICK_MIN_INTERVAL_SECONDS``, and none while the marker ``name`` is
    held, so a stream of commits coalesces into a few tasks (the first after a
    quiet spell goes at once). If the broker is unreachable the thread backs
    off; a periodic sweep does the work regardless.
    """

    def __init__(
        self, name: str, task: str, *, what: str, enabled: Callable[[], bool] = lambda: True
    ) -> None:
        self.name, self.task, self.what, self.enabled = name, task, what, enabled
        self.skipped = 0  # kicks not sent: a task from some process was already waiting
        self._wanted = threading.Event()
        self._wake = threading.Event()  # a kick is wanted, or the thread is to let go of its connection
        self._let_go = threading.Event()
        self._holding = False  # the thread has a connection open (kick_claim's)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._sending = threading.Lock()
        self._flushing: threading.Event | None = None
        self.sent = 0
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (k := me()) is not None and k._forked())

    def _forked(self) -> None:
        """In a new process (a prefork pool's child, forked from a worker whose push consumers
        commit): its parent's kicker thread is not here, so a lock that thread held at the fork
        would be held for ever. Start afresh, keeping a kick already asked for."""
        wanted = self._wanted.is_set()
        self._wanted, self._wake, self._let_go = threading.Event(), threading.Event(), threading.Event()
        if wanted:
            self._wanted.set()
            self._wake.set()
        self._holding = False
        self._thread = None
        self._lock = threading.Lock()
        self._sending = threading.Lock()
        self._flushing = None

    def request(self) -> None:
        if not self.enabled():
            return
        self._wanted.set()
        self._wake.set()
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._start()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no kick is wanted or being sent, and the thread has let go of the database
        connection it keeps after a send (a test, before it purges the queues or drops its
        database). True if idle within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self._wanted.is_set() or self._sending.locked() or self._holding:
            if time.monotonic() > deadline:
                return False
            if self._holding and not self._wanted.is_set() and not self._let_go.is_set():
                self._let_go.set()
                self._wake.set()
            time.sleep(0.02)
        return True

    def flush(self, timeout: float | None = None) -> None:
        """Send a requested kick now: for a short-lived process (a command) whose kicker thread
        would otherwise die with it before its next wake-up. Waits for a send the thread has in
        flight, so that one is not cut off either, but returns within ``timeout`` (default
        ``OUTBOX_KICK_FLUSH_SECONDS``) whatever the broker does: the send goes on in a daemon
        thread, which the process's exit ends. Once a flush has given up, later ones (atexit
        after the command's own) do not wait for the same broker again."""
        if not self._wanted.is_set() and not self._sending.locked():
            return  # nothing asked for, nothing in flight
        timeout = settings.OUTBOX_KICK_FLUSH_SECONDS if timeout is None else timeout
        previous = self._flushing
        if previous is not None and not previous.is_set():
            return  # an earlier flush is still waiting for the broker
        done = self._flushing = threading.Event()

        def run() -> None:
            try:
                self._flush_now()
            finally:
                connection.close()  # this thread's, opened by kick_claim
                done.set()

        try:
            threading.Thread(target=run, name=f"{self.name}-kicker-flush", daemon=True).start()
        except RuntimeError:  # no new thread this late in the interpreter's shutdown
            done.set()
            return
        if not done.wait(timeout):
            logger.warning(
                "the broker did not take the kick of %s within %.0fs; the periodic sweep will do its work",
                self.what,
                timeout,
            )

    def _flush_now(self) -> None:
        with self._sending:
            if not self._wanted.is_set():
                return
            self._wanted.clear()
            try:
                self._send()
            except Exception as exc:  # noqa: BLE001 - the sweep covers any failure here
                self._wanted.set()
                logger.warning(
                    "could not enqueue %s (%s); the periodic sweep will do its work", self.what, exc
                )

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                return
            if self._pid != os.getpid():
                # a short-lived process (a command) sends its last kick on the way out
                atexit.register(self.flush)
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name=f"{self.name}-kicker", daemon=True)
            self._thread.start()

    def _send(self) -> None:
        if not kick_claim(self.name):
            self.skipped += 1  # the waiting task will claim this process's rows too
            return
        try:
            # by name (the task's contract), so the committer never imports the tasks module
            current_app.send_task(self.task, retry=False)
        except Exception:
            _kick_given_back(self.name)  # the next kick, from any process, need not wait for it to go stale
            raise
        self.sent += 1

    def _run(self) -> None:
        failures = 0
        while True:
            woke = self._wake.wait(KEEP_CONNECTION_SECONDS if self._holding else None)
            self._wake.clear()  # (before reading what woke it: a request after this wakes it again)
            if not woke or self._let_go.is_set():  # quiet that long, or a test about to drop its database
                with contextlib.suppress(Exception):  # (a connection that cannot close is gone anyway)
                    connection.close()
                self._holding = False
                self._let_go.clear()
            if not self._wanted.is_set():
                continue
            try:
                with self._sending:  # flush() waits for a send in flight rather than lose it
                    self._wanted.clear()
                    self._holding = True  # (kick_claim opens it, or a failure's close leaves none)
                    try:
                        self._send()
                    except Exception:
                        self._wanted.set()  # still wanted: a flush() during the backoff sends it
                        raise
                failures = 0
                time.sleep(settings.OUTBOX_KICK_MIN_INTERVAL_SECONDS)  # later commits: the next kick
            except Exception as exc:  # noqa: BLE001 - the sweep covers any failure here
                failures += 1
                delay = backoff(failures, base=1.0, maximum=30.0)
                logger.warning("could not enqueue %s (%s); retrying in %.1fs", self.what, exc, delay)
                time.sleep(delay)
                self._wanted.set()
                self._wake.set()


class RelayKicker(Kicker):
    """The outbox's kicker: ``events.relay_outbox`` after a commit that recorded events."""

    def __init__(self) -> None:
        super().__init__(
            RELAY, "events.relay_outbox", what="the outbox relay", enabled=lambda: settings.OUTBOX_KICK_RELAY
        )


kicker = RelayKicker()
