"""Processes of a running stack for the benchmarks, started as ``make run`` starts them: a worker
serving the bulk queues, the ops worker (monitoring on a queue of its own) and beat. Each writes
its output to a log file in ``log_dir``; ``stop`` ends one (TERM, then KILL after 30 s)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import _env

PY = sys.executable
CELERY = [PY, "-m", "celery", "-A", "billing_project"]


def start(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    log = (log_dir / f"{name}.log").open("wb")
    return subprocess.Popen(
        argv, cwd=_env.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def worker(env: dict[str, str], log_dir: Path, queues: str = "default,events,invoicing,payments") -> subprocess.Popen[bytes]:
    argv = [*CELERY, "worker", "-Q", queues, "-l", "WARNING", "--concurrency", "2", "-n", "bench@%h"]
    return start("worker", argv, env, log_dir)


def ops_worker(env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    """Monitoring on a worker of its own, so it never waits behind bulk work (as make run)."""
    argv = [*CELERY, "worker", "-Q", "monitoring", "--pool", "threads", "--concurrency", "1", "-n", "ops@%h"]
    return start("ops", argv, env, log_dir)


def beat(env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    argv = [
        *CELERY,
        "beat",
        "-l",
        "WARNING",
        "--pidfile=",
        "--scheduler",
        "django_celery_beat.schedulers:DatabaseScheduler",
    ]
    return start("beat", argv, env, log_dir)
