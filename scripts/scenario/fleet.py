"""The worker processes and the beat process of a scenario, each in its own process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from devsupport.stack import background_env

from .signals import starting

ROOT = Path(__file__).resolve().parents[2]


class Fleet:
    """Celery workers (tasks and push consumers) and one beat, started and killed like a supervisor would."""

    def __init__(self, workers: int, env: dict[str, str]) -> None:
        self.env = env
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * workers
        self.beat: subprocess.Popen[bytes] | None = None
        self.spawned: list[subprocess.Popen[bytes]] = []  # every process started: ``stop`` ends them all
        try:
            for i in range(workers):
                self.start_worker(i)
            self.start_beat()
        except BaseException:  # a signal or a failure half-way: none left running
            self.stop()
            raise

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        with starting():  # a stopping signal waits until the process is recorded
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "billing_project", *args, "-l", "WARNING"],
                cwd=ROOT,
                env=background_env(self.env),  # as make run's: DEBUG off unless set
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.spawned.append(proc)
        return proc

    def start_worker(self, i: int) -> None:
        self.workers[i] = self._spawn(
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "4",
            "-n",
            f"scenario{i}-{os.getpid()}@%h",
            "-Q",
            "default,events,invoicing,payments,monitoring",
        )

    def start_beat(self) -> None:
        self.beat = self._spawn(
            "beat", "--pidfile=", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"
        )

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kill_worker(self, i: int) -> None:
        self._kill(self.workers[i])
        self.workers[i] = None

    def kill_beat(self) -> None:
        self._kill(self.beat)
        self.beat = None

    def supervise(self, violations: list[str]) -> None:
        """Like a process supervisor: a process that exited on its own is a violation; restart it."""
        for i, proc in enumerate(self.workers):
            if proc is not None and proc.poll() is not None:
                violations.append(f"worker {i} exited on its own (code {proc.returncode})")
                self.start_worker(i)
        if self.beat is not None and self.beat.poll() is not None:
            violations.append(f"beat exited on its own (code {self.beat.returncode})")
            self.start_beat()

    def stop_beat(self) -> None:
        if self.beat is not None and self.beat.poll() is None:
            os.killpg(self.beat.pid, signal.SIGTERM)
            self.beat.wait(30)
        self.beat = None

    def stop(self) -> None:
        procs = [p for p in self.spawned if p.poll() is None]
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                self._kill(proc)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
