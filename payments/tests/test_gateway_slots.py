"""A list's gateway-thread slots under a soft time limit striking anywhere in their bookkeeping:
none is ever lost (the process would charge with one thread fewer for the rest of its life) nor
freed twice (one more than PAYMENT_CHARGE_CONCURRENCY at the gateway). The limit is a signal's
exception, raised here where it may land."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from payments.services.gateway_threads import Slot, Slots


def free_of(semaphore: threading.Semaphore, size: int) -> int:
    got = [semaphore.acquire(blocking=False) for _ in range(size + 1)]
    for taken in got:
        if taken:
            semaphore.release()
    return sum(got)


def test_a_limit_as_a_list_frees_its_slots_loses_none(monkeypatch: Any) -> None:
    semaphore = threading.Semaphore(2)
    slots = Slots(semaphore)
    assert slots.take(0) and slots.take(0)
    real, struck = Slot.free, []

    def free(self: Slot) -> None:
        if not struck:  # as the first is freed
            struck.append(1)
            raise SoftTimeLimitExceeded()
        real(self)

    monkeypatch.setattr(Slot, "free", free)
    with pytest.raises(SoftTimeLimitExceeded):
        slots.release_held()  # after a wave
    slots.release_held()  # the list's finally
    assert free_of(semaphore, 2) == 2


def test_a_limit_as_a_list_takes_a_slot_loses_none(monkeypatch: Any) -> None:
    semaphore = threading.Semaphore(2)
    slots = Slots(semaphore)

    def made(self: Slot, semaphore: threading.Semaphore) -> None:
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(Slot, "__init__", made)
    with pytest.raises(SoftTimeLimitExceeded):
        slots.take(0)
    with pytest.raises(SoftTimeLimitExceeded):
        slots.more(1)
    slots.release_held()
    assert free_of(semaphore, 2) == 2


def test_a_slot_handed_to_a_send_and_freed_by_both_is_freed_once() -> None:
    semaphore = threading.Semaphore(2)
    slots = Slots(semaphore)
    assert slots.take(0)
    slot = slots.next()
    slots.release_held()  # the list, struck before its hand-over
    slot.free()  # the send, as its call returns
    assert free_of(semaphore, 2) == 2
