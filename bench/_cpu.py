"""Where a benchmark's CPU goes: CPU seconds by part of the stack, read from the machine's processes.

    meter = CpuMeter({"workers": lambda: pids_of(*procs), "endpoint": lambda: pids_of(pid), ...})
    meter.start(); ...; meter.mark("import"); ...; meter.mark("paid"); meter.stop()
    meter.between("import", "paid")  # {"workers": 22.7, "endpoint": 9.4, ...}

A thread reads every part's processes every ``interval`` seconds (psutil: user + system time of
each process, children included when a part names them), and ``mark`` reads them at once, so a
window's figure is exact up to what a process that ended inside it spent since the last read
(long-lived parts lose nothing). A process that started after the meter counts from zero; one
already running counts from the first read. Commands the benchmark runs to their end are counted
apart (``children_cpu``: the rusage of the benchmark's reaped children), since they end between
reads. The benchmark's own process is not counted: it only starts things and waits.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable, Iterable

import psutil


def pids_of(*roots: int | None) -> list[int]:
    """The processes ``roots`` and every descendant of theirs that is alive now."""
    pids: list[int] = []
    for root in roots:
        if root is None:
            continue
        try:
            proc = psutil.Process(root)
            pids += [root, *(c.pid for c in proc.children(recursive=True))]
        except psutil.NoSuchProcess:
            continue
    return pids


def postgres_pids() -> list[int]:
    """This machine's PostgreSQL processes (the server and its backends), when it runs here."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("postgres", "postmaster"):
            found.append(proc.pid)
    return found


def children_cpu() -> float:
    """CPU seconds of every child process this one has waited for, so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    def __init__(self, parts: dict[str, Callable[[], Iterable[int]]], interval: float = 0.5) -> None:
        self.parts = parts
        self.interval = interval
        self._lock = threading.Lock()
        self._seen: dict[int, tuple[str, float, float]] = {}  # pid -> (part, first read, last read)
        self._marks: dict[str, dict[str, float]] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)
        self._started = 0.0

    def start(self) -> None:
        self._started = time.time()
        self.read()
        self._thread.start()

    def stop(self) -> None:
        """Stop reading (if it started)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.read()

    def read(self) -> dict[str, float]:
        """Read every part's processes now; CPU seconds per part since the meter started."""
        with self._lock:
            for part, pids in self.parts.items():
                for pid in pids():
                    try:
                        proc = psutil.Process(pid)
                        with proc.oneshot():
                            times = proc.cpu_times()
                            used = times.user + times.system
                            created = proc.create_time()
                    except psutil.Error:
                        continue
                    if pid in self._seen and self._seen[pid][0] == part:
                        _, first, _ = self._seen[pid]
                    else:  # new to the meter: from zero if it started after the meter did
                        first = 0.0 if created >= self._started else used
                    self._seen[pid] = (part, first, used)
            totals = dict.fromkeys(self.parts, 0.0)
            for part, first, last in self._seen.values():
                totals[part] += last - first
            return totals

    def mark(self, name: str) -> None:
        self._marks[name] = self.read()

    def between(self, start: str, end: str) -> dict[str, float]:
        """CPU seconds per part from mark ``start`` to mark ``end``."""
        a, b = self._marks[start], self._marks[end]
        return {part: b[part] - a[part] for part in self.parts}


def cores() -> int:
    return os.cpu_count() or 1
