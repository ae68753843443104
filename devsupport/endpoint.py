"""The local SNS/SQS endpoint, started, stopped and restarted the same way everywhere.

``local_endpoint(kind)`` gives a ``LocalEndpoint`` for ``moto`` (its server, in this process or
as a child process) or ``ministack`` (a flat emulator in its own virtualenv, devsupport/ministack.py,
which can keep its queues and messages across a restart). ``restart(down_seconds)`` is an
outage that keeps the port: the fault harness and the tests use it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from .net import free_port, port_open
from .waiting import wait_until


class LocalEndpoint(Protocol):
    url: str

    @property
    def pid(self) -> int | None: ...

    def start(self) -> str: ...

    def stop(self) -> None: ...

    def restart(self, down_seconds: float) -> None: ...


class Moto:
    """moto's server on a fixed loopback port: in this process (threads) or as a child process
    (its own GIL: what `make run` and the benchmarks measure against). In-process, its state
    survives a restart (it lives in this process), as SQS keeps messages through an outage."""

    def __init__(self, *, port: int = 0, in_process: bool = False) -> None:
        os.environ.setdefault("MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR", "false")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.in_process = in_process
        self._server: object | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        if self.in_process:
            from moto.server import ThreadedMotoServer

            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            self._server.start()
        else:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches only the supervisor, which stops it in order
            )
            wait_until(lambda: port_open("127.0.0.1", self.port), 30, "moto server")
        return self.url

    @property
    def pid(self) -> int | None:
        """The server's process: a child's own, or this one's when it runs in this process."""
        return self._proc.pid if self._proc is not None else os.getpid()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(30)
            self._proc = None

    def restart(self, down_seconds: float) -> None:
        if not self.in_process:
            raise RuntimeError("a moto child process loses its queues on restart: use in_process=True")
        self.stop()
        time.sleep(down_seconds)
        self.start()


def local_endpoint(
    kind: str, *, port: int = 0, state_dir: Path | None = None, in_process: bool = False
) -> LocalEndpoint:
    """The endpoint of ``kind`` ("moto" or "ministack"), not started yet; on ``port`` (0: a free one).
    ``state_dir`` (ministack only) keeps its queues and messages across a clean restart."""
    if kind == "moto":
        return Moto(port=port, in_process=in_process)
    if kind == "ministack":
        from .ministack import Ministack

        return Ministack(port=port, state_dir=state_dir)
    raise ValueError(f"unknown local endpoint {kind!r}: moto or ministack")
