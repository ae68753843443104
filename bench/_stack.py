"""Processes of a running stack for the benchmarks, started as ``make run`` starts them: its
workers (devsupport.stack.WORKERS: two alike serving every bulk queue and running every push
consumer, and the ops worker for monitoring) and beat, with DEBUG off as there (background_env).
Each writes its output to a log file in ``log_dir``; ``stop`` ends one (TERM, then KILL after 30 s)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import _env

from devsupport.stack import WORKERS, background_env

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


def workers(env: dict[str, str], log_dir: Path, only: tuple[str, ...] = ()) -> list[subprocess.Popen[bytes]]:
    """The Celery workers of ``make run`` (devsupport.stack.WORKERS; ``only``: those named)."""
    return [
        start(
            w.name,
            [*CELERY, "worker", "-l", "WARNING", *w.options, "-n", f"bench-{w.name}@%h"],
            background_env(env),
            log_dir,
        )
        for w in WORKERS
        if not only or w.name in only
    ]


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
    return start("beat", argv, background_env(env), log_dir)
