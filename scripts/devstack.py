"""`make run`, `make manage` and `make test` live here: start the local parts, run, stop them all.

    python scripts/devstack.py run        # the whole system on embedded defaults
    python scripts/devstack.py manage ... # a manage.py command against the running `make run`
    python scripts/devstack.py test ...   # the test suite (extra args go to pytest)

Local parts (from devsupport/): an SNS/SQS endpoint on loopback (`make run`: ministack, which
keeps its queues and messages in .data/ across a clean restart, or moto with LOCAL_ENDPOINT=moto;
`make test`: ministack too, started by tests/plugin.py) and, unless DATABASE_URL points elsewhere,
an embedded PostgreSQL from the pgserver wheel. The children and how they stop:
devsupport/supervisor.py; what `make manage` reads to find the stack: devsupport/running.py.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import urllib.parse
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: devsupport is importable
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")  # platformdirs, imported by pgserver

from devsupport import running  # noqa: E402
from devsupport.database import DEFAULT_SERVER_URL, EmbeddedPostgres, postgres_answers, redact, with_database  # noqa: E402
from devsupport.endpoint import LocalEndpoint  # noqa: E402
from devsupport.net import free_port, http_ok, port_open  # noqa: E402
from devsupport.stack import WORKERS, prepare, start_endpoint, start_gateway, start_services, wait_for  # noqa: E402
from devsupport.supervisor import Child, log, pid_running, stop_all  # noqa: E402

PY = sys.executable
# Seconds a Celery worker gets, at Ctrl-C, to finish the tasks at hand (a second Ctrl-C: none).
STOP_GRACE_SECONDS = float(os.environ.get("STOP_GRACE_SECONDS", "30"))


# --------------------------------------------------------------------------
# make run
# --------------------------------------------------------------------------
def data_dir() -> Path:
    return Path(os.environ.get("BILLING_DATA_DIR", ROOT / ".data")).resolve()


def cmd_run(args: argparse.Namespace) -> int:
    data = data_dir()
    data.mkdir(parents=True, exist_ok=True)
    lock = running.hold(data)
    if lock is None:
        log(
            f"another `make run` (pid {running.holder(data) or '?'}) is running on {data}: stop it first "
            "(Ctrl-C in its terminal), or give this one its own BILLING_DATA_DIR and WEB_PORT"
        )
        return 2
    try:
        running.stack_file(data).unlink(missing_ok=True)  # left by a `make run` that was killed
        return _run(data)
    finally:
        lock.close()


def _run(data: Path) -> int:
    web_port = int(os.environ.get("WEB_PORT", "8000"))
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "billing_project.settings.dev")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # prometheus-client's multiprocess mode: worker pool children and web share counters here.
    metrics_dir = data / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

    first: list[Child] = []  # the gateway: stopped after the workers (a charge at hand finishes)
    children: list[Child] = []
    pg: EmbeddedPostgres | None = None
    endpoint: LocalEndpoint | None = None
    stopping = threading.Event()
    hurry = threading.Event()
    status = 0

    def shutdown(*_: object) -> None:
        if stopping.is_set():
            hurry.set()  # a second Ctrl-C: no more waiting for busy workers
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, shutdown)
    try:
        if os.environ.get("DATABASE_URL"):
            log(f"database: DATABASE_URL from the environment ({redact(env['DATABASE_URL'])})")
        else:
            pg = EmbeddedPostgres(data / "postgres")
            env["DATABASE_URL"] = pg.ensure_database("billing")
            log(f"database: embedded PostgreSQL in {pg.path} (pid {pg.postmaster_pid()})")
        endpoint, what = start_endpoint(data)
        env["AWS_ENDPOINT_URL"] = endpoint.url
        log(f"SNS/SQS: {what} on {endpoint.url} (pid {endpoint.pid})")
        gateway_port = int(os.environ.get("SANDBOX_GATEWAY_PORT", "0")) or free_port()
        env["PAYMENT_GATEWAY_URL"] = f"http://127.0.0.1:{gateway_port}"
        first.append(start_gateway(env, gateway_port))
        log(f"payment gateway: sandbox on {env['PAYMENT_GATEWAY_URL']}")
        prepare(env)
        if stopping.is_set():  # Ctrl-C during start-up
            return status
        ready = {w.name: threading.Event() for w in WORKERS}
        children = start_services(env, web_port, ready)
        admin_url = f"http://127.0.0.1:{web_port}/admin/"

        def up(check: Callable[[], bool]) -> Callable[[], bool]:
            return lambda: stopping.is_set() or exited() or check()

        def exited() -> bool:
            nonlocal status
            for child in [] if stopping.is_set() else [*first, *children]:
                if not child.alive():
                    log(f"{child.name} exited with {child.proc.returncode}; stopping everything")
                    status = 1
                    stopping.set()
            # the parts every child needs: without them workers only log connection errors
            parts = [("embedded PostgreSQL", pg.postmaster_pid())] if pg is not None else []
            for name, pid in [] if stopping.is_set() else [*parts, ("SNS/SQS endpoint", endpoint.pid)]:
                if not pid_running(pid):
                    log(f"the {name} (pid {pid}) exited; stopping everything")
                    status = 1
                    stopping.set()
            return stopping.is_set()

        wait_for(up(lambda: http_ok(admin_url + "login/")), 60, "admin")
        wait_for(up(lambda: all(e.is_set() for e in ready.values())), 90, "workers")
        if not stopping.is_set():
            announce(data, env, admin_url)
        while not exited():
            stopping.wait(0.5)
    finally:
        running.remove(data, pid=os.getpid())
        if children:
            log(
                f"stopping; busy workers finish their tasks first (up to {STOP_GRACE_SECONDS:.0f}s, "
                "Ctrl-C again to stop them now)"
            )
        stop_all([children, first], grace=STOP_GRACE_SECONDS, hurry=hurry)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if endpoint is not None:
            endpoint.stop()  # ministack saves its queues and messages on this (SIGTERM)
        if pg is not None:
            pg.stop()
            log("stopped embedded PostgreSQL")
        log("all stopped")
    return status


def announce(data: Path, env: dict[str, str], admin_url: str) -> None:
    """Say where it runs, and write what a command beside it needs (`make manage` reads it)."""
    values = running.stack_env(env)
    path = running.write(data, values, pid=os.getpid())
    log("workers ready")
    log(f"admin: {admin_url} (user 'operator')")
    log('commands beside it, in another terminal: make manage ARGS="messaging_status"')
    if redact(values.get("DATABASE_URL", "")) != values.get("DATABASE_URL", ""):  # not on screen
        log(f"or, in a shell: . {shlex.quote(str(path))}")
    else:
        log(f"or, in a shell: {running.export_line(values)}")
    log("running; press Ctrl-C to stop everything")


# --------------------------------------------------------------------------
# make manage
# --------------------------------------------------------------------------
def cmd_manage(argv: list[str]) -> int:
    """Run ``manage.py argv`` against the running `make run` (this process becomes it)."""
    data = data_dir()
    stack = running.read(data)
    if stack is None or not stack.alive():
        path = running.stack_file(data)
        starting = running.holder(data)
        if starting is not None:
            print(
                f"[devstack] The `make run` here (pid {starting}) is still starting; once it says "
                '"running", run this again.',
                file=sys.stderr,
            )
            return 2
        if stack is None:
            why = f"{path} is missing"
        else:
            why = f"{path} is left by pid {stack.pid}, which stopped without removing it"
        print(
            f"[devstack] No `make run` is running here ({why}).\n"
            '[devstack] Start it in another terminal with `make run`; once it says "running", run this '
            "again.\n[devstack] (Another database or endpoint: set DATABASE_URL and AWS_ENDPOINT_URL, "
            "then .venv/bin/python manage.py ...)",
            file=sys.stderr,
        )
        return 2
    gone = stack_part_gone(stack.env)
    if gone:
        print(
            f"[devstack] The `make run` here (pid {stack.pid}) runs, but {gone}.\n"
            "[devstack] Stop it (Ctrl-C in its terminal) and start it again.",
            file=sys.stderr,
        )
        return 2
    # The stack's settings win over the shell's (a RESOURCE_PREFIX it was not started with, too).
    shell = {k: v for k, v in os.environ.items() if k not in (*running.DECIDED, *running.PASSED_ON)}
    env = {**shell, **stack.env, "MANAGE_VIA": "make"}
    os.chdir(ROOT)
    os.execve(PY, [PY, "manage.py", *argv], env)


def stack_part_gone(env: dict[str, str]) -> str | None:
    """What of the stack in ``env`` no longer answers (its database, its SNS/SQS endpoint), or None."""
    url = env.get("DATABASE_URL", "")
    problem = postgres_answers(url) if url else None
    if problem:
        return f"its database does not answer ({redact(url)}: {problem.splitlines()[0]})"
    endpoint = urllib.parse.urlsplit(env.get("AWS_ENDPOINT_URL", ""))
    if endpoint.hostname and not port_open(endpoint.hostname, endpoint.port or 80):
        return f"its SNS/SQS endpoint does not answer ({env['AWS_ENDPOINT_URL']})"
    return None


# --------------------------------------------------------------------------
# make test
# --------------------------------------------------------------------------
def ensure_chromium() -> bool:
    """The browser test drives Debian's Chromium; install it if we may (root), else say how."""
    if shutil.which("chromium"):
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing Debian's chromium for the browser test (apt-get, once)")
        quiet = {"stdout": subprocess.DEVNULL, "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
        if (
            subprocess.call(["apt-get", "update", "-qq"], **quiet) == 0
            and subprocess.call(["apt-get", "install", "-y", "-qq", "chromium"], **quiet) == 0
        ):
            return True
    log("Chromium is missing: install it (sudo apt-get install chromium) for tests/test_browser.py")
    return False


def cmd_test(args: argparse.Namespace) -> int:
    if not ensure_chromium():
        return 2
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "billing_project.settings.test"
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.pop("AWS_ENDPOINT_URL", None)  # the test run starts its own endpoint (tests/plugin.py)
    pg: EmbeddedPostgres | None = None
    url = env.get("DATABASE_URL")
    if url:
        problem = postgres_answers(url)
        if problem:
            log(f"DATABASE_URL={redact(url)} does not answer: {problem}")
            log("Start that server, fix DATABASE_URL, or unset it to use 127.0.0.1:5432.")
            return 2
    else:
        problem = postgres_answers(DEFAULT_SERVER_URL)
        if problem is None:
            url = with_database(DEFAULT_SERVER_URL, "billing")
            log("database: PostgreSQL on 127.0.0.1:5432 (user postgres)")
        else:
            log(f"no PostgreSQL answers on 127.0.0.1:5432 ({problem.splitlines()[0]})")
            log(
                "falling back to an embedded PostgreSQL (pgserver) in .data/pgtest; "
                "to use your own server, set DATABASE_URL=postgres://USER:PASS@HOST:PORT/DB"
            )
            try:
                pg = EmbeddedPostgres(ROOT / ".data" / "pgtest")
            except Exception as exc:  # noqa: BLE001 - any failure here gets the same advice
                log(f"embedded PostgreSQL failed to start: {exc}")
                log("Install and start PostgreSQL (e.g. apt-get install postgresql) or set DATABASE_URL.")
                return 2
            url = pg.ensure_database("postgres")
        env["DATABASE_URL"] = url
    try:
        cmd = [PY, "-m", "pytest", *args.pytest_args]
        return subprocess.call(cmd, cwd=ROOT, env=env)
    finally:
        if pg is not None:
            pg.stop()


def main() -> int:
    if sys.argv[1:2] == ["manage"]:  # everything after it is manage.py's, options included
        return cmd_manage(sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the whole system on embedded defaults").set_defaults(func=cmd_run)
    sub.add_parser("manage", help="a manage.py command against the running `make run`")
    p_test = sub.add_parser("test", help="run the test suite")
    p_test.set_defaults(func=cmd_test)
    args, extra = parser.parse_known_args()
    if args.command != "test" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.pytest_args = extra
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
