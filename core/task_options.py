"""Task options shared by every app's tasks (STYLE: bound, no results, bounded retries with jitter)."""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DatabaseError, InterfaceError

# Idempotent work: acknowledged after it ran (a crash redelivers it), database hiccups
# (a terminated connection, a serialization failure) retried a bounded number of times.
IDEMPOTENT_DB_TASK: dict[str, Any] = {
    "bind": True,
    "ignore_result": True,
    "acks_late": True,
    "autoretry_for": (DatabaseError, InterfaceError),
    "max_retries": 5,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
}


def backoff_seconds(retries: int, *, base: float = 1.0, maximum: float = 60.0) -> int:
    """Exponential backoff with equal jitter: half fixed (never at once), half random (no lockstep)."""
    ceiling = min(maximum, base * 2**retries)
    return max(1, round(ceiling / 2 + random.uniform(0, ceiling / 2)))


# The signal a Celery (billiard) pool child's soft time limit arrives by.
SOFT_LIMIT_SIGNAL = getattr(signal, "SIGUSR1", None)


@contextmanager
def soft_limit_deferred() -> Iterator[None]:
    """A soft time limit striking inside the block is raised as the block ends. The limit is an
    exception the signal's handler raises wherever the main thread is: inside a semaphore's own
    lock it leaves that lock held (payments' gateway threads then wait on it until the hard limit
    kills the process); between a change committed and its record kept, the change is lost to
    the task (a charge claimed, never sent nor recorded as not sent). Use it only around work
    that does not wait long: the hard limit comes 30 s after the soft one. Only the main thread
    runs signal handlers: elsewhere there is nothing to defer."""
    if SOFT_LIMIT_SIGNAL is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(SOFT_LIMIT_SIGNAL)
    if not callable(handler):  # no limit set (outside a pool child)
        yield
        return
    struck: list[tuple[int, object]] = []
    signal.signal(SOFT_LIMIT_SIGNAL, lambda signum, frame: struck.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(SOFT_LIMIT_SIGNAL, handler)
        if struck:
            handler(*struck[0])  # raises SoftTimeLimitExceeded, here
