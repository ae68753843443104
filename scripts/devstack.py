"""`make run` and `make test` live here: start the local parts, run, stop them all.

    python scripts/devstack.py run      # the whole system on embedded defaults
    python scripts/devstack.py test ... # the test suite (extra args go to pytest)

Local parts (from devsupport/): an SNS/SQS endpoint on loopback (`make run`: ministack, which
keeps its queues and messages in .data/ across a clean restart, or moto with LOCAL_ENDPOINT=moto;
`make test`: ministack too, started by tests/plugin.py) and, unless DATABASE_URL points elsewhere, an embedded
PostgreSQL from the pgserver wheel. Every child
runs in its own session so Ctrl-C reaches only this supervisor, which then
stops each child's whole process group in order and waits for it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: devsupport is importable

from devsupport.database import DEFAULT_SERVER_URL, EmbeddedPostgres, postgres_answers, redact, with_database  # noqa: E402
from devsupport.endpoint import LocalEndpoint, local_endpoint  # noqa: E402
from devsupport.net import free_port, http_ok, port_open, port_or_free  # noqa: E402
from devsupport.waiting import wait_until  # noqa: E402

PY = sys.executable


def log(msg: str) -> None:
    print(f"[devstack] {msg}", flush=True)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        wait_until(check, timeout, what)
    except TimeoutError:
        raise SystemExit(f"[devstack] {what} did not come up within {timeout:.0f}s") from None


class Child:
    """A child process in its own session, its output prefixed and pumped to ours."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        on_line: Callable[[str], None] | None = None,
        hide: Callable[[str], bool] | None = None,
    ) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
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
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()
        log(f"started {name} (pid {self.proc.pid})")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if self.hide and self.hide(line):
                continue
            sys.stdout.write(f"{self.name:>8} | {line}")
            sys.stdout.flush()
            if self.on_line:
                self.on_line(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop in {timeout:.0f}s; killing it")
        # Whatever is left in its group (pool children), kill it.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.pump.join(timeout=2)
        log(f"stopped {self.name}")


# The SNS/SQS endpoint's port when it is free, so AWS_ENDPOINT_URL stays the same between runs
# (LocalStack's usual port: tools pointed at a local AWS try it first).
DEFAULT_ENDPOINT_PORT = 4566


def start_endpoint(data_dir: Path) -> tuple[LocalEndpoint, str]:
    """``LOCAL_ENDPOINT`` (ministack by default, chosen by bench/endpoints.py; or moto) on
    ``LOCAL_ENDPOINT_PORT`` (default 4566, any free port if taken), started. ministack keeps its
    state in ``data_dir`` so a clean restart finds the queued messages again; when it cannot be
    installed or started, moto stands in and the log says why. Returns it and what it is."""
    kind = os.environ.get("LOCAL_ENDPOINT", "ministack")
    if kind not in ("ministack", "moto"):
        raise SystemExit(f"[devstack] LOCAL_ENDPOINT={kind!r}: use ministack or moto")
    wanted = int(os.environ.get("LOCAL_ENDPOINT_PORT") or DEFAULT_ENDPOINT_PORT)
    port = port_or_free(wanted)
    if port != wanted:
        log(f"SNS/SQS: port {wanted} is taken; using {port} this time")
    if kind == "ministack":
        endpoint = local_endpoint("ministack", port=port, state_dir=data_dir / "ministack")
        try:
            endpoint.start()
            return endpoint, f"ministack (queues and messages kept in {data_dir / 'ministack'})"
        except Exception as exc:  # noqa: BLE001 - any failure: moto stands in, and we say why
            endpoint.stop()
            log(f"ministack could not start ({type(exc).__name__}: {exc}); using moto instead")
            port = port_or_free(wanted)
    endpoint = local_endpoint("moto", port=port)
    endpoint.start()
    return endpoint, "moto server (in memory: queued messages are lost when it stops)"


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, check=True)


# --------------------------------------------------------------------------
# make run
# --------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    data_dir = Path(os.environ.get("BILLING_DATA_DIR", ROOT / ".data")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    web_port = int(os.environ.get("WEB_PORT", "8000"))
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "billing_project.settings.dev")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # prometheus-client's multiprocess mode: worker pool children and web share counters here.
    metrics_dir = data_dir / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

    children: list[Child] = []
    pg: EmbeddedPostgres | None = None
    endpoint: LocalEndpoint | None = None
    stopping = threading.Event()

    def shutdown(*_: object) -> None:
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, shutdown)
    try:
        if os.environ.get("DATABASE_URL"):
            log(f"database: DATABASE_URL from the environment ({redact(env['DATABASE_URL'])})")
        else:
            pg = EmbeddedPostgres(data_dir / "postgres")
            env["DATABASE_URL"] = pg.ensure_database("billing")
            log(f"database: embedded PostgreSQL in {pg.path} (pid {pg.postmaster_pid()})")
        endpoint, what = start_endpoint(data_dir)
        env["AWS_ENDPOINT_URL"] = endpoint.url
        log(f"SNS/SQS: {what} on {endpoint.url} (pid {endpoint.pid})")
        gateway_port = int(os.environ.get("SANDBOX_GATEWAY_PORT", "0")) or free_port()
        env["PAYMENT_GATEWAY_URL"] = f"http://127.0.0.1:{gateway_port}"
        children.append(
            Child(
                "gateway",
                [
                    PY,
                    "-m",
                    "devsupport.sandbox_gateway",
                    "--port",
                    str(gateway_port),
                    "--latency-ms",
                    "200",
                    "--rate-limit",
                    "100",
                    "--soft-decline-rate",
                    "0.05",
                ],
                env,
            )
        )
        wait_for(lambda: port_open("127.0.0.1", gateway_port), 30, "sandbox gateway")
        log(f"payment gateway: sandbox on {env['PAYMENT_GATEWAY_URL']}")
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "messaging_provision")
        manage(env, "operator_ensure", "--username", "operator")

        ready: dict[str, threading.Event] = {"worker": threading.Event(), "ops": threading.Event()}

        def watch(name: str) -> Callable[[str], None]:
            def on_line(line: str) -> None:
                if " ready." in line:
                    ready[name].set()

            return on_line

        celery = [PY, "-m", "celery", "-A", "billing_project", "worker", "-l", "INFO"]
        # The bulk work: relay, daily run, charges, and every push consumer.
        children.append(
            Child(
                "worker",
                [*celery, "-Q", "default,events,invoicing,payments", "--concurrency", "2", "-n", "local@%h"],
                env,
                on_line=watch("worker"),
            )
        )
        # Operations on a path of their own: monitoring (and the alerts it publishes) never waits
        # behind a daily run's chunks or 10,000 charges on the worker above.
        children.append(
            Child(
                "ops",
                [
                    *celery,
                    *("-Q", "monitoring", "--pool", "threads", "--concurrency", "1"),
                    *("--event-consumers", "none", "-n", "ops@%h"),
                ],
                env,
                on_line=watch("ops"),
            )
        )
        children.append(
            Child(
                "beat",
                [
                    PY,
                    "-m",
                    "celery",
                    "-A",
                    "billing_project",
                    "beat",
                    "-l",
                    "INFO",
                    "--pidfile=",
                    "--scheduler",
                    "django_celery_beat.schedulers:DatabaseScheduler",
                ],
                env,
            )
        )
        children.append(
            Child("web", [PY, "manage.py", "runserver", f"127.0.0.1:{web_port}", "--noreload"], env)
        )
        admin_url = f"http://127.0.0.1:{web_port}/admin/"
        wait_for(lambda: stopping.is_set() or http_ok(admin_url + "login/"), 60, "admin")
        wait_for(lambda: stopping.is_set() or all(e.is_set() for e in ready.values()), 90, "workers")
        if not stopping.is_set():
            log("workers ready")
            log(f"admin: {admin_url} (user 'operator')")
            log("running; press Ctrl-C to stop everything")
        while not stopping.is_set():
            for child in children:
                if not child.alive():
                    log(f"{child.name} exited with {child.proc.returncode}; stopping everything")
                    stopping.set()
            stopping.wait(0.5)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for child in reversed(children):
            child.stop()
        if endpoint is not None:
            endpoint.stop()  # ministack saves its queues and messages on this (SIGTERM)
        if pg is not None:
            pg.stop()
            log("stopped embedded PostgreSQL")
        log("all stopped")
    return 0


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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the whole system on embedded defaults").set_defaults(func=cmd_run)
    p_test = sub.add_parser("test", help="run the test suite")
    p_test.set_defaults(func=cmd_test)
    args, extra = parser.parse_known_args()
    if args.command != "test" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.pytest_args = extra
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
