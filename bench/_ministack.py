"""Like ``_env``, with ministack (a flat local emulator) as the SNS/SQS endpoint, for benchmarks
that need deep queues: moto's SQS rescans the whole queue on every receive, so a 10,000-deep
queue makes each call take seconds there. Falls back to moto when ministack is unusable
(``EMULATOR`` and ``FALLBACK_REASON`` say so); ``BENCH_EMULATOR=moto`` forces moto.
"""

from __future__ import annotations

import os

os.environ.setdefault("BENCH_EMULATOR", "ministack")

from _env import (  # noqa: E402
    AGREEMENT_DATA,
    EMULATOR,
    ENDPOINT,
    FALLBACK_REASON,
    plain_receive_delete,
    report,
    timed,
)

__all__ = [
    "AGREEMENT_DATA",
    "EMULATOR",
    "ENDPOINT",
    "FALLBACK_REASON",
    "plain_receive_delete",
    "report",
    "timed",
]
