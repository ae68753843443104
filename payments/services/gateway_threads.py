"""This process's gateway threads: the pool a list's charges are sent on
(``PAYMENT_CHARGE_CONCURRENCY`` threads, made after a fork, never inherited) and a slot for each,
so a charge whose token came is sent at once, never queued behind other lists' calls
(services/charge_lists.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from core.per_process import PerProcess

from ..gateway import ChargeResult
from .charging import Started, charge_send


class Slots:
    """A list's hold on its process's gateway threads: the slots it took and has not handed to a
    send (a send frees its own when its call returns), all freed by ``release_held``."""

    def __init__(self, semaphore: threading.Semaphore) -> None:
        self.semaphore, self.held = semaphore, 0

    def take(self, timeout: float) -> bool:
        if self.semaphore.acquire(timeout=timeout):
            self.held += 1
            return True
        return False

    def more(self, wanted: int) -> None:
        """Take up to ``wanted`` more that are free now."""
        for _ in range(wanted):
            if not self.semaphore.acquire(blocking=False):
                return
            self.held += 1

    def hand_over(self) -> None:
        self.held -= 1

    def release_held(self) -> None:
        while self.held:
            self.held -= 1
            self.semaphore.release()


def send(started: Started, slots: threading.Semaphore) -> ChargeResult:
    """The gateway call on a pool thread; its slot is free again as soon as it returns."""
    try:
        return charge_send(started)
    finally:
        slots.release()


def _threads() -> tuple[ThreadPoolExecutor, threading.Semaphore]:
    size = max(1, settings.PAYMENT_CHARGE_CONCURRENCY)
    return ThreadPoolExecutor(size, thread_name_prefix="charge"), threading.Semaphore(size)


_pool = PerProcess(_threads)


def pool() -> tuple[ThreadPoolExecutor, threading.Semaphore]:
    """This process's threads for gateway calls and a slot for each (made after a fork, never
    inherited from before: core/per_process.py)."""
    return _pool.get()
