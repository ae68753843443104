"""Fixtures the payments tests share."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from core.task_options import SOFT_LIMIT_SIGNAL


@pytest.fixture
def soft_limit() -> Iterator[None]:
    """The soft time limit's handler, as a Celery pool child has it: SIGUSR1 raises
    SoftTimeLimitExceeded wherever the main thread is (``signal.raise_signal`` strikes it)."""

    def raise_limit(signum: int, frame: Any) -> None:
        raise SoftTimeLimitExceeded()

    previous = signal.signal(SOFT_LIMIT_SIGNAL, raise_limit)
    yield
    signal.signal(SOFT_LIMIT_SIGNAL, previous)
