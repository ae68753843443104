"""The one backoff rule: how long to wait before trying again after failures.

Exponential (``base * 2**(failures - 1)``), capped at ``maximum``, with equal jitter by default:
half of the delay is fixed, so a retry never comes at once, and half is random, so many failed
callers (relays, pollers, workers) do not retry in lockstep.
"""

from __future__ import annotations

import random


def backoff(failures: int, *, base: float, maximum: float, jitter: bool = True) -> float:
    """Seconds to wait after ``failures`` failures in a row (1 for the first)."""
    ceiling = min(maximum, base * 2 ** min(max(failures, 1) - 1, 62))
    if not jitter:
        return ceiling
    return ceiling / 2 + random.uniform(0, ceiling / 2)
