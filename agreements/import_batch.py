"""The import's batches: lines read from the file, made into agreements in processes of their
own, written by a thread of its own, in the order they were read.

Making a line an agreement (``row_to_input``: parsed and checked; ``bulk.prepare``: new ids, COPY
lines, the event checked against its contract) is nearly all of the import's Python work, and
writing a batch is mostly waiting on the database. By default a batch is made in the reading
thread while the writer thread writes the one before. With ``--preparers N``
(``AGREEMENTS_IMPORT_PREPARERS``) the reading thread hands each batch of lines to N processes,
forked when the import starts (before this process has a thread of its own), and reads on; the
writer thread writes the made batches one after another, so reading, preparing and writing run on
separate cores instead of taking turns at one interpreter lock. That pays where cores are idle;
inside a stack that already fills them, handing batches between processes (about 40 us of CPU a
row) makes the import slower (README, "Import format").

Whether a line repeats an earlier one is decided here, in line order, as the batches come back
(``SeenRefs``): a preparer sees only its batch, so it prepares the first line of each
external_ref in it, and a row found to repeat a line of an earlier batch is taken out of what it
prepared.

A preparing process that dies (killed, out of memory) costs nothing but speed: the batches it
held are made again in the reading thread, and so is the rest. Ctrl-C reaches the whole process
group; the preparers ignore it, and the command writes what it has read (``close``).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection

from core.commands import interrupts_held

from .bulk import Prepared, Written, prepare, write_batch
from .importing import RowError, SeenRefs, row_to_input
from .services import AgreementInput

logger = logging.getLogger(__name__)

Line = tuple[int, dict[str, Any] | RowError]  # as ``importing.read_rows`` yields it
Rows = list[tuple[int, AgreementInput]]


@dataclass(frozen=True)
class Made:
    """A batch of lines made into agreements: each line's input or why it is refused, and the
    first input of each external_ref prepared (None: preparing refused one, or none parsed)."""

    lines: list[tuple[int, AgreementInput | RowError]]
    prepared: Prepared | None


def make(lines: Sequence[Line], events_too: bool) -> Made:
    """Make each line an input or a RowError, and prepare the first input of each external_ref
    (``events_too``: see ``bulk.prepare``). No database: what the preparing processes run."""
    made: list[tuple[int, AgreementInput | RowError]] = []
    first: dict[str, AgreementInput] = {}
    for line, row in lines:
        if isinstance(row, RowError):  # a line that could not even be read
            made.append((line, row))
            continue
        try:
            data = row_to_input(row)
        except RowError as exc:
            made.append((line, exc.with_traceback(None)))  # kept: its frames (this batch) are not
            continue
        made.append((line, data))
        first.setdefault(data.external_ref, data)
    try:
        prepared = prepare(list(first.values()), events_too=events_too) if first else None
    except ValidationError:
        prepared = None  # the writer goes row by row and names the bad ones
    return Made(made, prepared)


# A batch also ends once its lines hold this many characters: lines wait as read (up to 1 MB each)
# until a preparer takes them, so a file of huge lines is read a few of them at a time.
BATCH_MAX_CHARS = 8_000_000
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _preparer_starts(parent: int) -> None:
    # Ctrl-C goes to every process of the terminal's group: the command is the one to handle it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A command killed outright (SIGKILL, the out-of-memory killer) never closes the pool, and a
    # forked preparer holds its queue's pipe open itself: have Linux end it with the command.
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (AttributeError, OSError):  # not Linux: such a preparer waits until it is killed
        pass
    if os.getppid() != parent:  # the command died before that
        os._exit(0)


class _Preparers:
    """``n`` processes forked now (a pool that forks starts all its processes at its first task,
    in the calling thread), before the command starts a thread whose locks a fork would copy held."""

    def __init__(self, n: int) -> None:
        fork = multiprocessing.get_context("fork")
        before = set(multiprocessing.active_children())
        with interrupts_held():  # a Ctrl-C now would reach a preparer before it ignores one
            self.pool = ProcessPoolExecutor(
                n, mp_context=fork, initializer=_preparer_starts, initargs=(os.getpid(),)
            )
            started = self.pool.submit(int)  # forks them all, here
        self.processes = [p for p in multiprocessing.active_children() if p not in before]
        try:
            started.result()
        except BrokenProcessPool:
            self.stop(kill=True)
            raise

    def stop(self, *, kill: bool = False) -> None:
        """Let them finish and end; ``kill``: end them now, without waiting (they hold nothing but
        work to redo, and one killed while sending its batch would leave the pool waiting)."""
        if kill:
            for process in self.processes:
                process.kill()
        self.pool.shutdown(wait=not kill, cancel_futures=True)


def _start_preparers(n: int) -> _Preparers | None:
    """``n`` preparers, or None (0 asked for, or they could not start: the batches are then made
    in the reading thread)."""
    if n < 1:
        return None
    try:
        return _Preparers(n)
    except BrokenProcessPool:
        logger.warning("the import's preparing processes could not start; it makes its batches itself")
        return None


def _close_connection() -> None:
    connection.close()  # looked up when run: the calling thread's own connection


class ImportBatch:
    """Lines of an import waiting to be made into agreements and written, ``size`` at a time.

    Outside a transaction, full batches are made by ``preparers`` processes (default
    ``AGREEMENTS_IMPORT_PREPARERS``; 0: in the caller's thread) and written in order by a thread of
    its own (with its own database connection), while the caller reads on. Inside the caller's
    transaction (a test, a larger unit of work), batches are made and written in it, in this
    thread. ``written`` sums what was created and found present so far, ``repeated`` the lines that
    repeat an earlier one exactly (skipped), ``rejected`` the lines refused; ``take_rejected``
    hands those over (once each)."""

    def __init__(self, size: int, preparers: int | None = None) -> None:
        self.size = size
        self.lines: list[Line] = []
        self._chars = 0  # in ``lines``
        self.written = Written()
        self.repeated = 0
        self.rejected = 0  # lines refused so far, whether ``take_rejected`` handed them over or not
        self._seen = SeenRefs()
        self._refused: list[tuple[int, RowError | ValidationError | DatabaseError]] = []
        in_transaction = connection.in_atomic_block
        n = settings.AGREEMENTS_IMPORT_PREPARERS if preparers is None else preparers
        self._preparers = None if in_transaction else _start_preparers(n)  # first: no thread yet
        self._pool = None if in_transaction else ThreadPoolExecutor(1, "agreements-import")
        self._pending: Future[Written] | None = None
        # Batches handed to the preparers, oldest first: one each being made, so none waits.
        self._queued: deque[tuple[list[Line], Future[Made] | Made]] = deque()
        self._ahead = n if self._preparers is not None else 0
        # Events are prepared ahead while batches create agreements; a batch that found all its
        # rows present (a re-import, the done part of a resumed one) stops that until one creates.
        self._expect_new = True

    def add(self, line: int, row: dict[str, Any] | RowError) -> bool:
        """Queue a line as ``read_rows`` gave it; True when the batch is full (then ``flush``):
        ``size`` lines, or fewer holding ``BATCH_MAX_CHARS``."""
        self.lines.append((line, row))
        self._chars += _chars(row)
        return len(self.lines) >= self.size or self._chars >= BATCH_MAX_CHARS

    def flush(self) -> None:
        """Have the queued lines made, then start writing the oldest made batches (each after the
        one before is written), leaving one being made per preparing process."""
        if self.lines:
            made = self._make(self.lines)  # interrupted (Ctrl-C) here, the lines are still queued
            with interrupts_held():
                self._queued.append((self.lines, made))
                self.lines, self._chars = [], 0
        while len(self._queued) > self._ahead:
            self._write_oldest()

    def close(self) -> None:
        """Write what is queued, wait for it, and release the preparers, the writer's connection
        and its thread (also when the queued lines could not be made: what was sent is still
        counted)."""
        try:
            self.flush()
            while self._queued:
                self._write_oldest()
        except BaseException:
            self._stop_preparers(kill=True)  # a Ctrl-C while closing: stop now (the rest is a resume's)
            raise
        finally:
            try:
                self._settle()
            finally:
                if self._pool is not None:
                    self._pool.submit(_close_connection).result()
                    self._pool.shutdown()
                    self._pool = None
                self._stop_preparers()

    def take_rejected(self) -> list[tuple[int, RowError | ValidationError | DatabaseError]]:
        """The lines refused since the last call, in line order: by their reading and checking,
        or by the database. ``put_back`` what could not be reported."""
        refused, self._refused = sorted(self._refused, key=lambda r: r[0]), []
        return refused

    def put_back(self, refused: list[tuple[int, RowError | ValidationError | DatabaseError]]) -> None:
        self._refused.extend(refused)

    def _make(self, lines: list[Line]) -> Future[Made] | Made:
        if self._preparers is not None:
            try:
                return self._preparers.pool.submit(make, lines, self._expect_new)
            except BrokenProcessPool:
                self._preparers_lost()
        return make(lines, self._expect_new)

    def _write_oldest(self) -> None:
        lines, made = self._queued[0]
        if isinstance(made, Future):
            try:
                made = made.result()  # interrupted while waiting, the batch is still queued
            except BrokenProcessPool:
                self._preparers_lost()
                made = make(lines, self._expect_new)
            self._queued[0] = (lines, made)  # interrupted below, it is not made again
        self._settle()  # interrupted while waiting, the batch is still queued as it was
        with interrupts_held():  # judged once: a second judging would find every line a repeat
            rows, prepared = self._new_rows(made)
            self._queued.popleft()
            if rows and self._pool is not None:
                self._pending = self._pool.submit(write_batch, rows, prepared)
        if rows and self._pool is None:  # in the caller's transaction: an interrupt rolls it back
            self._add(write_batch(rows, prepared))

    def _new_rows(self, made: Made) -> tuple[Rows, Prepared | None]:
        """The lines of ``made`` to write, in line order (a refused one is kept for
        ``take_rejected``, a repeat of an earlier line is skipped or refused), and what was
        prepared of them."""
        rows: Rows = []
        for line, data in made.lines:
            if isinstance(data, RowError):
                self._refused.append((line, data))
                self.rejected += 1
                continue
            earlier = self._seen.add(line, data)
            if earlier is None:
                rows.append((line, data))
            elif earlier[1]:
                self.repeated += 1  # the same row twice: skipped, as a re-import would be
            else:
                why = f"external_ref {data.external_ref!r} already on line {earlier[0]} with different data"
                self._refused.append((line, RowError(why)))
                self.rejected += 1
        prepared = made.prepared
        if prepared is not None and len(prepared.lines) != len(rows):  # some repeat an earlier batch
            prepared = prepared.only({data.external_ref for _, data in rows})
        return rows, prepared

    def _settle(self) -> None:
        if self._pending is not None:
            written = self._pending.result()  # re-raises what the writer could not handle
            with interrupts_held():  # only now: interrupted while waiting, ``close`` waits again
                self._pending = None
                self._add(written)

    def _add(self, w: Written) -> None:
        self._expect_new = w.created > 0 or w.present == 0
        self.written.created += w.created
        self.written.present += w.present
        self._refused.extend(w.rejected)  # with the lines refused before the database
        self.rejected += len(w.rejected)

    def _preparers_lost(self) -> None:
        if self._preparers is not None:
            logger.warning(
                "a process preparing the import's batches stopped; the rest is prepared in the "
                "command's own process (slower, nothing is lost)"
            )
        self._stop_preparers()

    def _stop_preparers(self, *, kill: bool = False) -> None:
        preparers, self._preparers, self._ahead = self._preparers, None, 0
        if preparers is not None:
            preparers.stop(kill=kill)


def _chars(row: dict[str, Any] | RowError) -> int:
    """About how much a line read holds (its values' characters)."""
    if isinstance(row, RowError):
        return len(str(row))
    return sum(len(v) if isinstance(v, str) else len(repr(v)) for v in row.values())
