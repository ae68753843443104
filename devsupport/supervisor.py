"""The processes `make run` starts, and how it stops them.

Every child runs in its own session, so Ctrl-C in the terminal reaches only the supervisor; its
output is pumped to ours, prefixed with its name, less blank lines and what ``hide`` drops.
``stop_all`` stops them in order: a Celery worker gets a warm shutdown (SIGTERM to its main
process only: it stops taking tasks, finishes the ones at hand, then ends its pool; signalling the
whole group killed the pool processes under it, hence WorkerLostError tracebacks), any other child
SIGTERM to its whole process group; after ``grace`` seconds, or a second Ctrl-C, what is left is
killed (an unfinished task goes back to its queue after the broker's visibility timeout: tasks
acknowledge late).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import psutil


def log(msg: str) -> None:
    print(f"[devstack] {msg}", flush=True)


def pid_running(pid: int | None) -> bool:
    """Whether process ``pid`` runs (one that exited and was not waited for yet does not)."""
    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Child:
    """A child process in its own session, its output prefixed and pumped to ``out``."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        *,
        cwd: Path,
        celery_worker: bool = False,
        on_line: Callable[[str], None] | None = None,
        hide: Callable[[str], object] | None = None,
        out: TextIO | None = None,
        what: str = "",
    ) -> None:
        self.name = name
        self.celery_worker = celery_worker
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
            bufsize=1,
        )
        self.on_line = on_line
        self.hide = hide
        self.out = out or sys.stdout
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()
        log(f"started {name} (pid {self.proc.pid}){': ' + what if what else ''}")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if self.on_line:
                self.on_line(line)
            if not line.strip() or (self.hide and self.hide(line)):
                continue
            self.out.write(f"{self.name:>8} | {line}")
            self.out.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        """Ask it to stop: a Celery worker's main process (warm shutdown), else the whole group."""
        if self.proc.poll() is not None:
            return
        try:
            if self.celery_worker:
                os.kill(self.proc.pid, signal.SIGTERM)
            else:
                os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """Kill whatever is left of its process group (pool processes of a worker killed first)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.pump.join(timeout=2)


def stop_all(
    phases: Sequence[Sequence[Child]], *, grace: float, hurry: threading.Event | None = None
) -> None:
    """Stop ``phases`` one after another; the children of a phase together (each as ``terminate``
    says), waiting up to ``grace`` seconds (less once ``hurry`` is set) before killing them."""
    hurry = hurry or threading.Event()
    for phase in phases:
        for child in phase:
            child.terminate()
        deadline = time.monotonic() + grace
        while any(c.alive() for c in phase) and time.monotonic() < deadline and not hurry.is_set():
            time.sleep(0.1)
        for child in phase:
            if child.alive():
                why = "Ctrl-C again" if hurry.is_set() else f"still running after {grace:.0f}s"
                tasks = "; its unfinished tasks go back to their queue" if child.celery_worker else ""
                log(f"{child.name}: {why}: killing it{tasks}")
            child.kill()
            log(f"stopped {child.name}")
