"""A token bucket in PostgreSQL: one charges-per-second limit shared by every worker and host.

Each caller reserves a token with one UPDATE, even when the bucket is empty: the balance
goes negative and the caller sleeps until its token is due (-balance / rate seconds). So
callers queue up in order with no polling, and the rate holds across any number of workers.
A charge reserves its token in the transaction that claims its payment (``reserve``, then
``wait`` after the commit): one commit fewer per charge than a reservation of its own.
"""

from __future__ import annotations

import time

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


def acquire(name: str, rate: float, *, timeout: float = 60.0) -> bool:
    """Reserve one token and wait until it is due; False (token returned) if that is beyond ``timeout``.

    Must run outside a transaction: the reservation commits at once for every other worker to see.
    """
    return wait(name, reserve(name, rate), timeout=timeout)


def reserve(name: str, rate: float) -> float:
    """Reserve one token; the seconds until it is due (0: now). Commits with the caller's
    transaction, which must end right after it: the bucket's row stays locked until then, as
    it does until an autocommit statement's own commit. A transaction rolled back takes nothing."""
    if rate <= 0:
        return 0.0
    cap = max(1.0, rate / 2)  # at most half a second's worth of burst
    with connection.cursor() as cur:
        cur.execute(RESERVE, {"name": name, "cap": cap, "rate": rate})
        balance = float(cur.fetchone()[0])
    return max(0.0, -balance / rate)


def wait(name: str, due_in: float, *, timeout: float = 60.0) -> bool:
    """After ``reserve`` committed: sleep until the token is due and True; or, if that is beyond
    ``timeout``, give the token back (at once, for every other worker) and False."""
    if due_in > timeout:
        with connection.cursor() as cur:
            cur.execute(GIVE_BACK, [name])
        return False
    if due_in > 0:
        time.sleep(due_in)
    return True
