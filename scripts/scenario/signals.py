"""The soak ends on SIGTERM or SIGHUP as on Ctrl-C: a ``SystemExit`` in the main thread, so the
``finally`` blocks stop its workers, beat, gateway and endpoint before it exits.

Only the first such signal interrupts (a second one, or Ctrl-C pressed twice, would cut that
stopping short and orphan what was not stopped yet); a signal that arrives while a process is being
started waits until the process is recorded (``starting``: a ``Popen`` interrupted after its fork
would leave a child nobody knows of). A signal the soak was started ignoring (``nohup``) stays
ignored."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_starting = 0
_pending: int | None = None


def stop_on_signals() -> None:
    """In the main thread, before anything is started."""
    for signum in SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _on_signal)


@contextmanager
def starting() -> Iterator[None]:
    """Around starting a process and recording it: a stopping signal waits until the block ends."""
    global _starting
    _starting += 1
    try:
        yield
    finally:
        _starting -= 1
        if not _starting and _pending is not None:
            _stop(_pending)


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    global _pending
    if _starting:
        _pending = signum
        return
    _stop(signum)


def _stop(signum: int) -> None:
    for other in SIGNALS:  # only the first one interrupts
        if signal.getsignal(other) is _on_signal:
            signal.signal(other, signal.SIG_IGN)
    raise SystemExit(128 + signum)
