"""Where a benchmark's CPU goes: CPU seconds by part of the stack, read from the machine's processes.

    meter = CpuMeter({"workers": lambda: pids_of(*procs), "endpoint": lambda: pids_of(pid), ...})
    meter.start(); ...; meter.mark("import"); ...; meter.mark("paid"); meter.stop()
    meter.between("import", "paid")  # {"workers": 22.7, "endpoint": 9.4, ...}

A thread reads every part's processes every ``interval`` seconds (psutil: user + system time of
each process, its descendants too when a part names them), and ``mark`` reads them at once. A
process already running at ``start`` counts from then; any other (a process is its pid and start
time, so a reused pid is a new process) from zero. What is missed: a process's CPU after its last
read when it ends inside the window, and a process that starts and ends between two reads (a
short-lived database connection, an autovacuum worker); the long-lived parts (workers, the
endpoint, the server's connections) lose nothing. Commands the benchmark runs to their end are
counted apart (``children_cpu``: the rusage of the benchmark's reaped children), since they end
between reads. The benchmark's own process is never counted: it only starts things and waits.
"""

from __future__ import annotations

import os
import re
import resource
import threading
from collections.abc import Callable, Iterable

import psutil


def pids_of(*roots: int | None) -> list[int]:
    """The processes ``roots`` and every descendant of theirs that is alive now (never this one:
    an endpoint running in the benchmark's own process has no process of its own to count)."""
    pids: list[int] = []
    for root in roots:
        if root is None or root == os.getpid():
            continue
        try:
            proc = psutil.Process(root)
            pids += [root, *(c.pid for c in proc.children(recursive=True))]
        except psutil.NoSuchProcess:
            continue
    return pids


_CLIENT = re.compile(r"\[local\]|[^\s()]+\(\d+\)")


def postgres_pids(database: str) -> list[int]:
    """This machine's PostgreSQL processes working for ``database``: its client connections, and
    the server's own processes (the postmaster, writers, autovacuum), which every database shares.
    Other databases' connections (another checkout's tests, say) are left out."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] not in ("postgres", "postmaster"):
            continue
        words = " ".join(proc.info["cmdline"] or []).split()
        # a client connection's title: "postgres: [CLUSTER:] USER DATABASE HOST(PORT) STATE" ([local]
        # for a socket); the server's own processes name themselves ("checkpointer", "walwriter")
        at = next((i for i, w in enumerate(words) if i >= 3 and _CLIENT.fullmatch(w)), None)
        if words[:1] != ["postgres:"] or at is None or words[at - 1] == database:
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
        # (pid, start time) -> (part, first read, last read)
        self._seen: dict[tuple[int, float], tuple[str, float, float]] = {}
        self._running_at_start: set[tuple[int, float]] = set()
        self._marks: dict[str, dict[str, float]] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)

    def start(self) -> None:
        self._running_at_start = {
            (p.pid, p.info["create_time"]) for p in psutil.process_iter(["create_time"])
        }
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
                try:
                    found = list(pids())
                except Exception:  # noqa: BLE001 - a part that cannot be listed now is read next time
                    found = []
                for pid in found:
                    try:
                        proc = psutil.Process(pid)
                        with proc.oneshot():
                            times = proc.cpu_times()
                            used = times.user + times.system
                            key = (pid, proc.create_time())
                    except psutil.Error:
                        continue
                    # new to the meter: counted from zero unless it was running when the meter started
                    owner, first, _ = self._seen.get(key) or (
                        part,
                        used if key in self._running_at_start else 0.0,
                        0.0,
                    )
                    self._seen[key] = (owner, first, used)
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
