"""Running a test's step in a forked process (a Celery pool's child, as a worker forks it)."""

from __future__ import annotations

import json
import os
import select
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest


def in_child(run: Callable[[], dict[str, Any]], timeout: float = 30.0) -> dict[str, Any]:
    """Fork; ``run()`` in the child; its result (or the error it raised) back through a pipe.
    Fails if the child does not answer within ``timeout`` (a deadlock)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest, whatever happens
        try:
            os.close(read)
            try:
                out = run()
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                out = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(write, json.dumps(out, default=repr).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], timeout)
        if not ready:
            os.kill(pid, 9)
            pytest.fail(f"the forked process did not answer within {timeout:.0f} s")
        data = b""
        while chunk := os.read(read, 65536):
            data += chunk
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    return json.loads(data)


@contextmanager
def held_by_a_thread(lock: Any) -> Iterator[None]:
    """A thread of this process holds ``lock`` until the block ends (as a thread making a value
    would when the process forks): a forked child has no such thread to release it."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(5), "the thread did not take the lock"
    try:
        yield
    finally:
        release.set()
        thread.join()
