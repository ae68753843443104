"""A list's gateway-thread slots under a soft time limit striking anywhere in their bookkeeping:
none is ever lost (the process would charge with one thread fewer for the rest of its life) nor
freed twice (one more than PAYMENT_CHARGE_CONCURRENCY at the gateway), and no semaphore is left
locked. The limit arrives as billiard sends it: SIGUSR1, whose handler raises
SoftTimeLimitExceeded wherever the main thread is; here the signal is raised inside the
semaphore's own calls."""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from core.task_options import SOFT_LIMIT_SIGNAL
from payments.services.gateway_threads import Slots


class StruckSemaphore(threading.Semaphore):
    """A semaphore whose next acquire or release is struck by the soft time limit inside it:
    between its work and its return (acquire: taken, not yet kept) or before it (release)."""

    def __init__(self, value: int, strike: str) -> None:
        super().__init__(value)
        self.strike = strike

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        taken = super().acquire(*args, **kwargs)
        if self.strike == "acquire":
            self.strike = ""
            signal.raise_signal(SOFT_LIMIT_SIGNAL)
        return taken

    def release(self, n: int = 1) -> None:
        if self.strike == "release":
            self.strike = ""
            signal.raise_signal(SOFT_LIMIT_SIGNAL)
        super().release(n)


def free_of(semaphore: threading.Semaphore, size: int) -> int:
    got = [threading.Semaphore.acquire(semaphore, blocking=False) for _ in range(size + 1)]
    for taken in got:
        if taken:
            threading.Semaphore.release(semaphore)
    return sum(got)


def test_a_limit_as_a_list_frees_its_slots_loses_none(soft_limit: None) -> None:
    semaphore = StruckSemaphore(2, strike="")
    slots = Slots(semaphore)
    assert slots.take(0) and slots.take(0)
    semaphore.strike = "release"
    with pytest.raises(SoftTimeLimitExceeded):
        slots.release_held()  # the limit is raised once both are free
    slots.release_held()  # the list's finally
    assert free_of(semaphore, 2) == 2


@pytest.mark.parametrize("how", ["take", "more"])
def test_a_limit_as_a_list_takes_a_slot_loses_none(soft_limit: None, how: str) -> None:
    semaphore = StruckSemaphore(2, strike="acquire")
    slots = Slots(semaphore)
    with pytest.raises(SoftTimeLimitExceeded):
        slots.take(0) if how == "take" else slots.more(1)  # the limit is raised once it is kept
    assert slots.held == 1
    slots.release_held()  # the list's finally
    assert free_of(semaphore, 2) == 2


def test_a_slot_handed_to_a_send_and_freed_by_both_is_freed_once() -> None:
    semaphore = threading.Semaphore(2)
    slots = Slots(semaphore)
    assert slots.take(0)
    slot = slots.next()
    slots.release_held()  # the list, struck before its hand-over
    slot.free()  # the send, as its call returns
    assert free_of(semaphore, 2) == 2
