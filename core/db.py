"""The database connection after a failure: one place that decides whether it is still usable."""

from __future__ import annotations

import logging

from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)


def drop_broken_connection() -> None:
    """After a database error outside a transaction: close this thread's connection if the error
    broke it (one the server dropped), so that the next statement opens a new one. A connection
    the error left usable (a constraint, a deadlock) is kept; inside a transaction nothing is
    done, the transaction's owner decides."""
    if not connection.errors_occurred or connection.in_atomic_block:
        return
    try:
        close_old_connections()
    except Exception:  # noqa: BLE001 - a broken connection is dropped either way
        logger.debug("could not close old connections", exc_info=True)
