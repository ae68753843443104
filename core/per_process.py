"""A value each process makes for itself, once, on first use: AWS clients (events/topology/aws.py),
the relay's publishing threads (events/publishing/sns.py), the gateway's threads
(payments/services/gateway_threads.py).

A forked process (a Celery pool's child, started or replaced after its worker made the value)
never uses its parent's: threads are not copied by a fork, so an inherited executor would queue
work for ever, and an inherited connection pool holds sockets the parent reads too. Nor does it
inherit a lock a parent's thread held at the fork, which no thread of the child would release.
The kicker (events/publishing/kicker.py) keeps a thread's state rather than a value, and renews
it at a fork the same way, with ``os.register_at_fork``.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_UNSET: Any = object()  # not made yet (None may be a value made)


class PerProcess(Generic[T]):
    """``get()`` returns this process's value, made by ``make()`` on first use (one thread makes
    it, the others wait); ``reset()`` forgets it (settings changed). After a fork the child starts
    with none, and a new lock."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._value: T = _UNSET
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (p := me()) is not None and p._forget_after_fork())

    def get(self) -> T:
        value = self._value
        if value is not _UNSET:
            return value
        with self._lock:
            if self._value is _UNSET:
                self._value = self._make()
            return self._value

    def reset(self) -> None:
        with self._lock:
            self._value = _UNSET

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._value = _UNSET
