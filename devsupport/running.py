"""What a second process needs to reach the running `make run` stack, in one small file.

`make run` writes ``<data dir>/run.env`` once everything is up (``export NAME=value`` lines a shell
can source, readable by its owner only) and removes it when it stops; `make manage ARGS="..."`
reads it and runs ``manage.py`` with it.

Whether a `make run` is running is not the file's say: `make run` holds ``run.lock`` in the same
folder (an advisory lock, released by the kernel however the process ends), so a file left by a
`make run` that was killed, whose pid a new process may have taken since, is known to be stale,
and a second `make run` on the same folder refuses to start instead of sharing its database and
endpoint state and then removing the first one's file as it stops.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

FILE_NAME = "run.env"
LOCK_NAME = "run.lock"
PID_NAME = "BILLING_STACK_PID"
# What make run decides for its children (a command beside them needs the same) ...
DECIDED = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "AWS_ENDPOINT_URL", "PAYMENT_GATEWAY_URL")
# ... and settings that change the names of what it reaches, when they were set for make run.
PASSED_ON = ("RESOURCE_PREFIX", "AWS_REGION")


@dataclass(frozen=True)
class Stack:
    path: Path
    pid: int
    env: dict[str, str]

    def alive(self) -> bool:
        """Whether the `make run` that wrote this file still runs (it holds the folder's lock)."""
        return self.pid > 0 and holder(self.path.parent) == self.pid


def stack_file(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def stack_env(env: dict[str, str]) -> dict[str, str]:
    """The part of make run's environment that a command beside it needs."""
    return {k: env[k] for k in (*DECIDED, *PASSED_ON) if env.get(k)}


def export_line(values: dict[str, str]) -> str:
    return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in values.items())


def write(data_dir: Path, values: dict[str, str], *, pid: int) -> Path:
    path = stack_file(data_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a DATABASE_URL may hold a password
    os.fchmod(fd, 0o600)  # a file left by a crash keeps its mode through O_CREAT: set it anyway
    with os.fdopen(fd, "w") as fh:
        fh.write("# written by `make run` for `make manage`; removed when it stops\n")
        for name, value in {PID_NAME: str(pid), **values}.items():
            fh.write(f"export {name}={shlex.quote(value)}\n")
    tmp.replace(path)
    return path


def read(data_dir: Path) -> Stack | None:
    """The stack described in ``data_dir``, or None when no file is there (check ``alive()``)."""
    path = stack_file(data_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    values: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            values[name] = value
    pid = values.pop(PID_NAME, "")
    return Stack(path=path, pid=int(pid) if pid.isdigit() else 0, env=values)


def remove(data_dir: Path, *, pid: int) -> None:
    """Remove the file if this ``pid`` wrote it."""
    stack = read(data_dir)
    if stack is not None and stack.pid == pid:
        stack.path.unlink(missing_ok=True)


def hold(data_dir: Path) -> TextIO | None:
    """Take ``data_dir`` for this `make run`: the open lock file (keep it open while running; it is
    released when it is closed or the process ends), or None when another process holds it."""
    fh = open(data_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the whole run
    for _ in range(20):  # a `make manage` looks at the lock for an instant (holder): let it
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.05)
    else:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def holder(data_dir: Path) -> int | None:
    """The pid of the `make run` holding ``data_dir`` (0 if it has not said it yet), or None."""
    try:
        fh = open(data_dir / LOCK_NAME)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = fh.read().strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fh, fcntl.LOCK_UN)
        return None
