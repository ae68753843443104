"""This process's gateway threads: the pool a list's charges are sent on
(``PAYMENT_CHARGE_CONCURRENCY`` threads, made after a fork, never inherited) and a slot for each,
so a charge whose token came is sent at once, never queued behind other lists' calls
(services/charge_lists.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from core.per_process import PerProcess
from core.task_options import soft_limit_deferred

from ..gateway import ChargeResult
from .charging import Started, charge_send


class Slot:
    """One of a process's gateway threads, taken: freed once, by whichever of its list and its
    send lets go of it first (a soft time limit between a send's submit and its hand-over left
    both to free it: one thread more than PAYMENT_CHARGE_CONCURRENCY for good)."""

    def __init__(self, semaphore: threading.Semaphore) -> None:
        self._semaphore, self._lock, self._freed = semaphore, threading.Lock(), False

    def free(self) -> None:
        with self._lock:
            if self._freed:
                return
            self._freed = True
        self._semaphore.release()


class Slots:
    """A list's hold on its process's gateway threads: the slots it took and has not handed to a
    send (a send frees its own when its call returns), all freed by ``release_held``."""

    def __init__(self, semaphore: threading.Semaphore) -> None:
        self.semaphore, self._held = semaphore, list[Slot]()

    @property
    def held(self) -> int:
        return len(self._held)

    def take(self, timeout: float) -> bool:
        with soft_limit_deferred():
            if self.semaphore.acquire(timeout=timeout):
                self._held.append(Slot(self.semaphore))
                return True
            return False

    def more(self, wanted: int) -> None:
        """Take up to ``wanted`` more that are free now."""
        with soft_limit_deferred():
            for _ in range(wanted):
                if not self.semaphore.acquire(blocking=False):
                    return
                self._held.append(Slot(self.semaphore))

    def next(self) -> Slot:
        """The slot the next send takes (still this list's until ``hand_over``)."""
        return self._held[-1]

    def hand_over(self) -> None:
        self._held.pop()

    def release_held(self) -> None:
        with soft_limit_deferred():
            while self._held:
                self._held.pop().free()


def send(started: Started, slot: Slot) -> ChargeResult:
    """The gateway call on a pool thread; its slot is free again as soon as it returns."""
    try:
        return charge_send(started)
    finally:
        slot.free()


def _threads() -> tuple[ThreadPoolExecutor, threading.Semaphore]:
    size = max(1, settings.PAYMENT_CHARGE_CONCURRENCY)
    return ThreadPoolExecutor(size, thread_name_prefix="charge"), threading.Semaphore(size)


_pool = PerProcess(_threads)


def pool() -> tuple[ThreadPoolExecutor, threading.Semaphore]:
    """This process's threads for gateway calls and a slot for each (made after a fork, never
    inherited from before: core/per_process.py)."""
    return _pool.get()
