"""What the operator's management commands share: progress on a terminal, a Ctrl-C that says
what was done, and the command line that runs one (again).

``progress_bar`` is tqdm with the project's choices: on stderr, with a rate and an ETA, only when
stderr is a terminal (logs and CI get the command's summary lines, no bar). ``interrupted`` is
the error a command raises on Ctrl-C (KeyboardInterrupt): what was done, the exact command that
resumes and why running it is safe, exit status 130, no traceback; ``interrupts_held`` makes a
few steps that must happen together take a Ctrl-C once they are done. ``command_line`` spells a
management command the way this one was run: ``make manage ARGS="..."`` beside ``make run``
(which sets ``MANAGE_VIA=make``), else ``python manage.py ...``. ``few_collections`` is for a
command that makes and drops millions of small objects (a bulk import).
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from django.core.management.base import CommandError, OutputWrapper
from tqdm import tqdm

# Set by `make manage` (scripts/devstack.py): resume hints are then given in that form.
MANAGE_VIA_ENV = "MANAGE_VIA"
# What a shell reports for a process ended by SIGINT (128 + 2).
INTERRUPTED_EXIT = 130


def progress_bar(*, total: int, unit: str, desc: str) -> tqdm:
    """A progress bar ("import:  40%|####      | 4000/10000 [00:02<00:03, 1850.12line/s]") on a
    terminal; disabled (its methods do nothing) when stderr is not one."""
    return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, disable=None, dynamic_ncols=True)


def note(bar: tqdm | None, message: str, stderr: OutputWrapper) -> None:
    """A line on the command's ``stderr`` that does not break the bar: while one is shown,
    through tqdm (which clears it, writes, redraws it)."""
    if bar is None or bar.disable:
        stderr.write(message)
    else:
        tqdm.write(message, file=sys.stderr)


def command_line(*args: str) -> str:
    """The command that runs ``manage.py *args`` the way this process was run, as a shell line."""
    line = shlex.join(args)
    if os.environ.get(MANAGE_VIA_ENV) == "make":
        return f"make manage ARGS={_make_value(line)}"
    return f"python manage.py {line}"


def _make_value(line: str) -> str:
    """``line`` as the value of a variable on make's command line, quoted for the shell: make
    expands ``$`` in it (``$$`` is one), and the shell must hand make the line as one word. In
    double quotes when nothing in it means anything there (``ARGS="dlq_inspect invoicing"``), else
    in single quotes (a file name with a quote, a ``$``, a backquote or a ``!``)."""
    value = line.replace("$", "$$")
    if re.search(r'["\\$`!]', value):
        return shlex.quote(value)
    return f'"{value}"'


def interrupted(done: str, *, resume: Sequence[str], why_safe: str) -> CommandError:
    """The error for Ctrl-C: ``done`` (what was done, counts), then the command that resumes
    (``resume``: manage.py's arguments) and ``why_safe`` (why running it again does no harm)."""
    return CommandError(
        f"Interrupted: {done}\nTo resume, run:\n  {command_line(*resume)}\n{why_safe}",
        returncode=INTERRUPTED_EXIT,
    )


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """A Ctrl-C (SIGINT) while the block runs takes effect once it ends: for steps whose state a
    second run would misread if they stopped half-way (a batch judged and handed on, counts kept).
    Keep the block short and free of waits: a Ctrl-C does nothing until it ends. An error raised in
    the block wins over a held Ctrl-C. Only the main thread receives signals; elsewhere this does
    nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[tuple[int, Any]] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append((signum, frame)))
    try:
        yield
    finally:
        # An error raised in the block goes on as it is (the command stops either way).
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
        if held and sys.exc_info()[0] is None:
            if callable(previous):
                previous(*held[0])  # Python's own handler: raises KeyboardInterrupt here
            elif previous in (signal.SIG_DFL, None):
                signal.raise_signal(signal.SIGINT)


class _Collector:
    """What ``few_collections`` changed, for whoever leaves last (uses may overlap, in threads)."""

    lock = threading.Lock()
    users = 0
    threshold: tuple[int, ...] = ()
    froze = False


@contextlib.contextmanager
def few_collections(first_generation: int = 20_000) -> Iterator[None]:
    """Run a bulk command's work with the cyclic garbage collector mostly out of the way.

    By default the collector runs after every 700 new objects and, every so often, walks every
    object of the process (Django's, the libraries'), none of which a bulk command frees: a
    tenth of an import's time. Here what exists already is frozen out of its walks
    (``gc.freeze``, unless the process froze objects of its own: then they stay as they are) and
    it runs after ``first_generation`` new objects. Reference counting still frees everything
    that is not in a cycle at once, so memory stays as flat. The process's settings come back
    when the last use ends (a command can run inside a long-lived process, in a thread)."""
    with _Collector.lock:
        if _Collector.users == 0:
            _Collector.threshold = gc.get_threshold()
            _Collector.froze = gc.get_freeze_count() == 0
            if _Collector.froze:
                gc.freeze()
            gc.set_threshold(first_generation, *_Collector.threshold[1:])
        _Collector.users += 1
    try:
        yield
    finally:
        with _Collector.lock:
            _Collector.users -= 1
            if _Collector.users == 0:
                gc.set_threshold(*_Collector.threshold)
                if _Collector.froze:
                    gc.unfreeze()
