"""A token bucket in PostgreSQL: one charges-per-second limit shared by every worker and host.

Each caller reserves its tokens with one UPDATE, even when the bucket is empty: the balance
goes negative and the caller sleeps until its last token is due (-balance / rate seconds). So
callers queue up in order with no polling, and the rate holds across any number of workers.
The bucket holds at most half a second's worth (``burst``): what may go to the gateway at once.
A charge waits for its token before it claims its payment (services/charging.py; several
charges of a list, no more than ``burst``, reserve theirs together), and the token is given back
if there turns out to be nothing to charge (after the others of its wave are sent). A claim that
fails keeps its wave's tokens: the next charges wait that much longer, no more.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from django.db import connection

from .models import RateLimitBucket

TABLE = RateLimitBucket._meta.db_table
RESERVE = f"""
INSERT INTO {TABLE} (name, tokens, updated_at) VALUES (%(name)s, %(cap)s - %(n)s, clock_timestamp())
ON CONFLICT (name) DO UPDATE
   SET tokens = LEAST(%(cap)s, {TABLE}.tokens
                      + EXTRACT(EPOCH FROM clock_timestamp() - {TABLE}.updated_at) * %(rate)s) - %(n)s,
       updated_at = clock_timestamp()
RETURNING tokens
"""
GIVE_BACK = f"UPDATE {TABLE} SET tokens = tokens + %s WHERE name = %s"


def burst(rate: float) -> float:
    """How many tokens the bucket holds at most: half a second's worth (at least one); no bound
    when there is no limit (``rate`` 0)."""
    return math.inf if rate <= 0 else max(1.0, rate / 2)


def acquire(
    name: str,
    rate: float,
    *,
    n: int = 1,
    timeout: float = 60.0,
    while_waiting: Callable[[float], None] | None = None,
) -> bool:
    """Reserve ``n`` tokens and wait until the last is due; False (tokens returned) if that is beyond
    ``timeout``. ``while_waiting(seconds)``: called first when there is a wait, using it (the wait
    is not made longer by it, unless it takes longer).

    Must run outside a transaction: the reservation commits at once for every other worker to see.
    """
    if rate <= 0:
        return True
    with connection.cursor() as cur:
        cur.execute(RESERVE, {"name": name, "cap": burst(rate), "rate": rate, "n": n})
        balance = float(cur.fetchone()[0])
    if balance >= 0:
        return True
    wait = -balance / rate
    if wait > timeout:
        give_back(name, n)
        return False
    due = time.monotonic() + wait
    if while_waiting is not None:
        while_waiting(wait)
    time.sleep(max(0.0, due - time.monotonic()))
    return True


def give_back(name: str, n: int = 1) -> None:
    """Return tokens not used (outside a transaction, as ``acquire``)."""
    with connection.cursor() as cur:
        cur.execute(GIVE_BACK, [n, name])
