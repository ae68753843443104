"""The relay kicker: after a commit that recorded events, ask for a relay run without waiting.

Kicks coalesce twice. In a process, a daemon thread sends at most one per
``OUTBOX_KICK_MIN_INTERVAL_SECONDS``. Across processes (every worker child, web process and
command kicks), a row in ``events_relaykick`` says a relay will look for due rows later: a relay
task was sent, or a relay is running (``kick_hold``). A kicker claims it with one conditional
upsert before sending and sends nothing while it is held, and a relay clears it as it stops,
before its last look (``kick_release``). Nothing is lost by skipping: the relay waiting or running
takes every row committed before that last look, and a row committed after it finds the marker
cleared and kicks again. A claim whose send failed is given back; one whose task was lost goes
stale after ``OUTBOX_KICK_PENDING_SECONDS``; the periodic sweep publishes whatever a lost kick
was about. Without this, N processes each sending one kick per interval queued ~1,400 relay
tasks ahead of 5,000 charges on a two-process worker.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from core.backoff import backoff

from ..models import RelayKick

logger = logging.getLogger(__name__)

RELAY = "relay"  # the marker's row: one relay (RELAY_LOCK) for the whole outbox


def kick_claim() -> bool:
    """Claim the right to send a relay task: True unless a relay task sent by any process, or a
    relay running, holds the marker (``kick_hold``). Fails open: a database that does not answer
    here costs a kick too many, never one too few."""
    try:
        close_old_connections()  # this runs in the kicker's own long-lived thread
        return kick_hold()
    except DatabaseError as exc:
        logger.warning("could not read the relay kick marker (%s); kicking anyway", exc)
        connection.close()
        return True


def kick_hold() -> bool:
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
            [RELAY, settings.OUTBOX_KICK_PENDING_SECONDS],
        )
        return cur.fetchone() is not None


def kick_release() -> None:
    """A relay is stopping and about to look for rows one last time: kicks from now on are about
    rows it will not see, so they go."""
    RelayKick.objects.filter(name=RELAY, sent_at__isnull=False).update(sent_at=None)


def _kick_given_back() -> None:
    try:
        kick_release()
    except DatabaseError:  # it goes stale instead
        connection.close()


class RelayKicker:
    """After a commit, ask for a relay run without making the committer wait.

    ``request()`` only sets a flag (well under a microsecond); a daemon thread
    per process sends one ``events.relay_outbox`` task per wake-up, at most one
    per ``OUTBOX_KICK_MIN_INTERVAL_SECONDS``, so a stream of commits coalesces
    into a few tasks (the first after a quiet spell goes at once). If the broker
    is unreachable the thread backs off; the periodic sweep publishes the rows
    regardless.
    """

    def __init__(self) -> None:
        self.skipped = 0  # kicks not sent: a relay task from some process was already waiting
        self._wanted = threading.Event()
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
        self._wanted = threading.Event()
        if wanted:
            self._wanted.set()
        self._thread = None
        self._lock = threading.Lock()
        self._sending = threading.Lock()
        self._flushing = None

    def request(self) -> None:
        if not settings.OUTBOX_KICK_RELAY:
            return
        self._wanted.set()
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._start()

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
            threading.Thread(target=run, name="outbox-relay-kicker-flush", daemon=True).start()
        except RuntimeError:  # no new thread this late in the interpreter's shutdown
            done.set()
            return
        if not done.wait(timeout):
            logger.warning(
                "the broker did not take the outbox relay kick within %.0fs; the periodic sweep will publish",
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
                    "could not enqueue the outbox relay (%s); the periodic sweep will publish", exc
                )

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                return
            if self._pid != os.getpid():
                # a short-lived process (a command) sends its last kick on the way out
                atexit.register(self.flush)
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="outbox-relay-kicker", daemon=True)
            self._thread.start()

    def _send(self) -> None:
        if not kick_claim():
            self.skipped += 1  # the waiting task will claim this process's rows too
            return
        try:
            # by name (the task's contract), so the outbox never imports the tasks module
            current_app.send_task("events.relay_outbox", retry=False)
        except Exception:
            _kick_given_back()  # the next kick, from any process, need not wait for it to go stale
            raise
        self.sent += 1

    def _run(self) -> None:
        failures = 0
        while True:
            self._wanted.wait()
            try:
                with self._sending:  # flush() waits for a send in flight rather than lose it
                    self._wanted.clear()
                    try:
                        self._send()
                    except Exception:
                        self._wanted.set()  # still wanted: a flush() during the backoff sends it
                        raise
                failures = 0
                time.sleep(settings.OUTBOX_KICK_MIN_INTERVAL_SECONDS)  # later commits: the next kick
                if not self._wanted.is_set():
                    connection.close()  # quiet now: hold no idle connection for kick_claim
            except Exception as exc:  # noqa: BLE001 - the sweep covers any failure here
                failures += 1
                delay = backoff(failures, base=1.0, maximum=30.0)
                logger.warning("could not enqueue the outbox relay (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                self._wanted.set()


kicker = RelayKicker()
