"""The database connection between units of work: whether it is still usable, and when to ask."""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)

# A connection that finished a unit of work this many seconds ago or less is used without a ping.
RECENTLY_SECONDS = 5.0

_last_good = threading.local()  # this thread's connection (the driver's) and when a unit last ended on it


def connection_lost(used: Any) -> bool:
    """After a database error outside a transaction: whether the driver connection ``used`` (the
    one the failed work ran on; None if it never got one) is gone, closed or already replaced (a
    transaction that cannot roll back on a dropped connection makes Django close it and open
    another as the block ends), so that the same work on a new one may succeed. Inside an outer
    transaction nothing can be tried again."""
    if used is None or connection.in_atomic_block:
        return False
    return bool(used.closed) or connection.connection is not used


def drop_broken_connection() -> None:
    """After a database error outside a transaction: close this thread's connection if the error
    broke it (one the server dropped), so that the next statement opens a new one. A connection
    the error left usable (a constraint, a deadlock) is kept; inside a transaction nothing is
    done, the transaction's owner decides."""
    if not connection.errors_occurred or connection.in_atomic_block:
        return
    _close_old_connections()


@contextmanager
def unit_of_work() -> Iterator[None]:
    """Around one unit of work on a long-lived thread (a consumer's message or receive batch), what
    Django does around a request: before and after it, this thread's connection is closed if it is
    past CONN_MAX_AGE, broken, or left in a transaction.

    Django would also ping the connection (CONN_HEALTH_CHECKS: a ``SELECT 1``) before the unit's
    first statement. One that was kept after a unit less than ``RECENTLY_SECONDS`` ago, and on
    whose socket nothing has arrived since, is not pinged: back-to-back receive batches save a
    round trip each. An idle connection is sent nothing (no LISTEN here) unless the server ends
    it: a terminated backend's notice, a restart's or a failover's end of stream make the socket
    readable, and the ping then finds it dead, as Django's would. Only a connection dropped in the
    microseconds between this look and the first statement (or a network path that died
    silently, which a ping would wait on too) fails the unit's first statement, as a connection
    dropped mid-unit does, and its owner copes (a batch is run again one message at a time on a
    new connection; a single message comes back)."""
    _close_old_connections()
    driver = connection.connection
    if (
        driver is not None
        and getattr(_last_good, "driver", None) is driver
        and time.monotonic() - _last_good.at < RECENTLY_SECONDS
        and not _has_news(driver)
    ):
        connection.health_check_done = True
    try:
        yield
    finally:
        _close_old_connections()  # an errored connection is pinged here, and closed if dead
        _last_good.driver, _last_good.at = connection.connection, time.monotonic()


def _has_news(driver: object) -> bool:
    """Whether anything has arrived on an idle connection's socket (or it cannot be looked at)."""
    try:
        poller = select.poll()
        poller.register(driver.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)  # type: ignore[attr-defined]
        return bool(poller.poll(0))
    except Exception:  # noqa: BLE001 - a driver without a socket to look at is pinged, as Django would
        return True


def _close_old_connections() -> None:
    try:
        close_old_connections()
    except Exception:  # noqa: BLE001 - a broken connection is dropped either way
        logger.debug("could not close old connections", exc_info=True)
