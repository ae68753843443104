"""ministack (a flat local AWS emulator) as a child process, for runs where moto is too slow.

moto's SQS rescans a whole queue on every call, so deep queues make it crawl; ministack keeps a
queue as a plain list. It is not a project dependency: it runs from its own virtualenv
(``$MINISTACK_VENV``, default ``.data/ministack-venv``, git-ignored), made from
requirements/ministack.txt when missing, that file installed over it again when it changed. SQS,
SNS, STS and CloudWatch (the alarms ``messaging_provision --alarms`` makes) only, on loopback. Its
ASGI app is served by uvicorn with uvloop and httptools rather than ministack's own hypercorn
start: the same app, for less of the endpoint's CPU per call (bench/endpoints.py measures both;
README, "Local SNS/SQS endpoint").

With ``state_dir`` it saves its state there when stopped (SIGTERM) and loads it when started
again, so ``restart()`` (stop, then start on the same port) is an endpoint outage that loses
nothing, as SQS keeps its messages through one. Reached through devsupport.endpoint.
"""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .net import free_port, port_open

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements" / "ministack.txt"
VENV = Path(os.environ.get("MINISTACK_VENV", ROOT / ".data" / "ministack-venv"))
# Seconds a stopping endpoint lets requests in flight (a long poll) finish before it saves its state.
GRACEFUL_STOP_SECONDS = 3  # as ministack's own hypercorn start
SERVERS = ("uvicorn", "hypercorn")
# How ministack is started: its server (argv[2]: a module run as ``python -m``, with the rest of argv)
# and a thread that stops it as SIGTERM would (its state saved) once the process that started it
# (argv[1]) is gone: a test run or ``make run`` killed outright leaves no emulator behind it.
LAUNCHER = """
import os, runpy, signal, sys, threading, time
parent, module = int(sys.argv[1]), sys.argv[2]
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=watch, name="parent-watch", daemon=True).start()
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _pinned(name: str) -> str:
    for line in REQUIREMENTS.read_text().splitlines():
        if line.startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise RuntimeError(f"{REQUIREMENTS} pins no {name}")


MINISTACK_VERSION = _pinned("ministack")

# (virtualenv, requirements) whose install failed in this process: not tried again at every start
# (a test run restarts its endpoint many times, and offline each try costs pip's timeout).
_failed: set[tuple[Path, str]] = set()


def ensure_venv() -> Path:
    """The virtualenv's python, after making the virtualenv if it is missing or installing
    requirements/ministack.txt over it if that file changed since (a copy in the venv says). One
    process installs at a time (a lock beside the venv: ``make run`` and ``make test`` at once).
    An install that fails over a virtualenv that has ministack (offline, after a pull) leaves it as
    it is, with a warning; ``start`` then serves it as it can."""
    python, stamp = VENV / "bin" / "python", VENV / "requirements.txt"
    wanted = REQUIREMENTS.read_text()
    if (python.exists() and stamp.exists() and stamp.read_text() == wanted) or (VENV, wanted) in _failed:
        return python
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with (VENV.parent / f".{VENV.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and stamp.exists() and stamp.read_text() == wanted:
            return python  # another process installed it meanwhile
        print(f"[ministack] installing {REQUIREMENTS} into {VENV} (once)", flush=True)
        steps = [] if python.exists() else [[sys.executable, "-m", "venv", str(VENV)]]
        pip = [str(python), "-m", "pip", "install", "--quiet", "--retries", "1", "--timeout", "15"]
        steps.append([*pip, "-r", str(REQUIREMENTS)])
        for argv in steps:
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                error = f"{' '.join(argv[1:4])} failed: {' | '.join(tail)}"
                if not _installed(python, "ministack"):
                    raise RuntimeError(error)
                print(f"[ministack] {error}; using {VENV} as it is", flush=True)
                _failed.add((VENV, wanted))
                return python
        written = stamp.with_name(stamp.name + ".new")
        written.write_text(wanted)
        os.replace(written, stamp)
    return python


def _installed(python: Path, package: str) -> bool:
    """Whether the virtualenv of ``python`` has ``package`` (its folder in site-packages)."""
    return any(python.parent.parent.glob(f"lib/python*/site-packages/{package}/__init__.py"))


def _more_open_files() -> None:
    """The soft limit on open files raised to the hard one, as ministack's own start does (a
    stack's workers hold many keep-alive connections): in this process, whose children inherit it
    (a ``preexec_fn`` doing it in the child is not safe in a process with threads)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def smoke(endpoint: str) -> None:
    """The SQS calls the project makes, once each, on a throwaway queue."""
    import boto3

    sqs = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    url = sqs.create_queue(QueueName="ministack-smoke")["QueueUrl"]
    assert sqs.get_queue_url(QueueName="ministack-smoke")["QueueUrl"] == url
    attrs = {"event_type": {"DataType": "String", "StringValue": "smoke"}}
    ok = sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": "0", "MessageBody": "{}", "MessageAttributes": attrs}]
    )
    assert len(ok.get("Successful", [])) == 1, ok
    msgs = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
    ).get("Messages", [])
    assert len(msgs) == 1 and msgs[0]["MessageAttributes"]["event_type"]["StringValue"] == "smoke", msgs
    done = sqs.delete_message_batch(
        QueueUrl=url, Entries=[{"Id": "0", "ReceiptHandle": msgs[0]["ReceiptHandle"]}]
    )
    assert len(done.get("Successful", [])) == 1, done
    sqs.delete_queue(QueueUrl=url)


class Ministack:
    """One ministack process on a fixed loopback port; ``stop()``/``start()`` as often as wanted."""

    def __init__(
        self,
        *,
        port: int = 0,
        state_dir: Path | None = None,
        log_file: Path | None = None,
        server: str = "uvicorn",
    ) -> None:
        if server not in SERVERS:
            raise ValueError(f"unknown server {server!r}: one of {', '.join(SERVERS)}")
        self.server = server  # "hypercorn": ministack's own start (bench/endpoints.py compares them)
        self.port = port or free_port()
        self.url = self.endpoint = f"http://127.0.0.1:{self.port}"
        self.state_dir = state_dir
        self.log_file = log_file or Path(tempfile.gettempdir()) / f"ministack-{os.getpid()}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._smoked = False

    def start(self) -> str:
        python = ensure_venv()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "GATEWAY_PORT": str(self.port),
            "BIND_HOST": "127.0.0.1",
            "SERVICES": "sqs,sns,sts,cloudwatch",
            "LOG_LEVEL": "WARNING",
            "PERSIST_STATE": "1" if self.state_dir else "0",
        }
        if self.state_dir:
            env["STATE_DIR"] = str(self.state_dir)
        server = self.server
        if server == "uvicorn" and not all(_installed(python, p) for p in ("uvicorn", "uvloop", "httptools")):
            print(f"[ministack] uvicorn is not in {VENV}: served by ministack's own start", flush=True)
            server = "hypercorn"
        _more_open_files()
        self.proc = subprocess.Popen(
            self._argv(python, server),
            env=env,
            cwd=tempfile.gettempdir(),
            stdin=subprocess.DEVNULL,
            stdout=self.log_file.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ministack did not come up (see {self.log_file})")
            time.sleep(0.1)
        if not self._smoked:
            smoke(self.endpoint)
            self._smoked = True
        return self.endpoint

    def _argv(self, python: Path, server: str) -> list[str]:
        launch = [str(python), "-c", LAUNCHER, str(os.getpid())]
        if server == "hypercorn":
            return [*launch, "ministack"]
        return [
            *launch,
            "uvicorn",
            "ministack.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--lifespan",
            "on",  # ministack loads its state at startup and saves it at shutdown
            "--log-level",
            "warning",
            "--no-access-log",
            "--no-server-header",  # ministack writes its own Date header, and no Server one
            "--no-date-header",
            "--timeout-keep-alive",
            "75",
            "--timeout-graceful-shutdown",
            str(GRACEFUL_STOP_SECONDS),
        ]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        """SIGTERM (ministack saves its state, when it keeps one), then wait for it to exit."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        clean = proc.returncode in (0, -signal.SIGTERM)
        if clean and self.log_file.exists() and not self.log_file.stat().st_size:
            self.log_file.unlink()  # keep the log only when it says something

    def restart(self, down_seconds: float) -> None:
        """An outage: stop (saving the state when it keeps one), wait, start on the same port."""
        self.stop()
        time.sleep(down_seconds)
        self.start()
