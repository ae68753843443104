"""The shared token bucket holds the rate across threads (each with its own DB connection)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from payments.ratelimit import acquire


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("n", [1, 5], ids=["one token at a time", "five at a time (a list's claims)"])
def test_many_threads_together_never_exceed_the_rate(n: int):
    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            for _ in range(10 // n):
                assert acquire("test", rate=50, n=n)
                with lock:
                    stamps.extend([time.monotonic()] * n)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    # 80 tokens at 50/s with a burst of 25: at least (80 - 25) / 50 = 1.1 s
    assert len(stamps) == 80 and elapsed >= 1.0
    # and in no one-second window more than rate + burst
    stamps.sort()
    assert max(sum(1 for s in stamps if t0 <= s < t0 + 1) for t0 in stamps) <= 50 + 25 + n


@pytest.mark.django_db(transaction=True)
def test_a_wait_beyond_the_timeout_gives_the_token_back():
    for _ in range(2):
        acquire("slow", rate=1)
    for _ in range(5):  # each would wait about a second: refused at once
        assert acquire("slow", rate=1, timeout=0.1) is False
    assert acquire("slow", rate=1, n=3, timeout=0.1) is False  # three at once: all three given back
    # the refused callers took nothing: the balance is where the two served ones left it
    # (kept, it would be 5 tokens deeper in debt and the next caller would wait 6 s, not 1)
    with connection.cursor() as cur:
        cur.execute("SELECT tokens FROM payments_ratelimitbucket WHERE name = 'slow'")
        assert float(cur.fetchone()[0]) > -1.5
