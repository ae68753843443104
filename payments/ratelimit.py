"""A token bucket in PostgreSQL: one charges-per-second limit shared by every worker and host.

Each caller reserves a token with one UPDATE, even when the bucket is empty: the balance
goes negative and the caller sleeps until its token is due (-balance / rate seconds). So
callers queue up in order with no polling, and the rate holds across any number of workers.
A charge waits for its token before it claims its payment (services/charging.py), and gives
it back if there turns out to be nothing to charge.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.db import connection

from .models import RateLimitBucket

TABLE = RateLimitBucket._meta.db_table
RESERVE = f"""
INSERT INTO {TABLE} (name, tokens, updated_at) VALUES (%(name)s, %(cap)s - 1, clock_timestamp())
ON CONFLICT (name) DO UPDATE
   SET tokens = LEAST(%(cap)s, {TABLE}.tokens
                      + EXTRACT(EPOCH FROM clock_timestamp() - {TABLE}.updated_at) * %(rate)s) - 1,
       updated_at = clock_timestamp()
RETURNING tokens
"""
GIVE_BACK = f"UPDATE {TABLE} SET tokens = tokens + 1 WHERE name = %s"


def acquire(
    name: str, rate: float, *, timeout: float = 60.0, while_waiting: Callable[[float], None] | None = None
) -> bool:
    """Reserve one token and wait until it is due; False (token returned) if that is beyond ``timeout``.
    ``while_waiting(seconds)``: called first when there is a wait, using it (the wait is not made
    longer by it, unless it takes longer).

    Must run outside a transaction: the reservation commits at once for every other worker to see.
    """
    if rate <= 0:
        return True
    cap = max(1.0, rate / 2)  # at most half a second's worth of burst
    with connection.cursor() as cur:
        cur.execute(RESERVE, {"name": name, "cap": cap, "rate": rate})
        balance = float(cur.fetchone()[0])
    if balance >= 0:
        return True
    wait = -balance / rate
    if wait > timeout:
        give_back(name)
        return False
    due = time.monotonic() + wait
    if while_waiting is not None:
        while_waiting(wait)
    time.sleep(max(0.0, due - time.monotonic()))
    return True


def give_back(name: str) -> None:
    """Return a token not used (outside a transaction, as ``acquire``)."""
    with connection.cursor() as cur:
        cur.execute(GIVE_BACK, [name])
