"""The scenario harness, short version for CI: a simulated history with every fault, then the invariants
(the delivery audit's among them: every consumer has every event it subscribes to)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest
from django.db import connection

from devsupport.database import drop_database
from devsupport.sandbox_gateway import SandboxConfig, start_in_thread
from events import topology
from events.topology.provisioning import provision
from payments.gateway import reset_gateway
from scripts import scenario
from tests import plugin
from tests.helpers import database_url, wait_until

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.django_db(transaction=True)
def test_short_scenario_keeps_every_invariant(settings, empty_queues):
    original = (settings.MESSAGING_EVENT_VISIBILITY_TIMEOUT, settings.CELERY_VISIBILITY_TIMEOUT)
    # beat's periodic tasks on short intervals (the harness syncs them into beat's tables)
    settings.OUTBOX_SWEEP_SECONDS = 1
    settings.PAYMENT_RETRY_SWEEP_SECONDS = 2
    settings.MONITOR_INTERVAL_SECONDS = settings.HEARTBEAT_INTERVAL_SECONDS = 10
    settings.INVOICING_WATCHDOG_SECONDS = 3
    settings.DELIVERY_AUDIT_INTERVAL_SECONDS, settings.DELIVERY_AUDIT_GRACE_SECONDS = 5, 10
    gateway = start_in_thread(SandboxConfig(seed=5, soft_decline_rate=0.1, transient_rate=0.1))
    settings.PAYMENT_GATEWAY_URL = gateway.url
    settings.MESSAGING_EVENT_VISIBILITY_TIMEOUT = 10
    settings.CELERY_VISIBILITY_TIMEOUT = 30
    provision(topology.build())  # shorter visibility: killed work comes back quickly
    reset_gateway()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "EVENT_CONSUMERS_IN_WORKER": "all",
        "PAYMENT_GATEWAY_URL": gateway.url,
        "PAYMENT_TRANSIENT_BACKOFF_SECONDS": "1",
        "PAYMENT_CHARGE_LEASE_SECONDS": "20",
        "PAYMENT_PROCESSING_STALE_SECONDS": "15",
        "OUTBOX_KICK_RELAY": "true",
        "CELERY_TASK_TIME_LIMIT": "20",
        "CELERY_MAX_COUNTDOWN": "5",
        "CELERY_VISIBILITY_MARGIN": "5",
        "MESSAGING_EVENT_VISIBILITY_TIMEOUT": "10",
        "INVOICING_WATCHDOG_SECONDS": "3",
        "INVOICING_CHUNK_STALE_SECONDS": "5",
        "DELIVERY_AUDIT_GRACE_SECONDS": "10",
        # the simulated calendar lies in the past: every late change is corrected, whatever its age
        "INVOICING_MAX_CORRECTION_DAYS": "100000",
    }

    def stats() -> dict:
        with urllib.request.urlopen(f"{gateway.url}/v1/_stats") as resp:
            return json.load(resp)

    def configure(**config) -> None:
        for key, value in config.items():
            setattr(gateway.sandbox.config, key, value)

    try:
        report = scenario.run(
            agreements=24,
            days=12,
            seed=int(os.environ.get("SCENARIO_SEED", "20261127")),
            worker_env=env,
            outage_seconds=5,
            restart_endpoint=plugin.restart_endpoint,
            gateway_stats=stats,
            gateway_config=configure,
            poison=3,
            settle_timeout=300,
        )
    finally:
        gateway.shutdown()
        settings.MESSAGING_EVENT_VISIBILITY_TIMEOUT, settings.CELERY_VISIBILITY_TIMEOUT = original
        provision(topology.build())  # the queues as every other test expects them
    print(report.table())
    assert report.violations == []
    assert set(report.faults) == set(scenario.FAULT_KINDS)  # every kind of fault, at least once


def celery_commands(soak: psutil.Process) -> list[str]:
    """The command lines of the soak's Celery processes (its workers and beat, their pools)."""
    commands = []
    for proc in soak.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            commands.append(" ".join(proc.cmdline()))
    return [c for c in commands if " -m celery " in c]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_soak_ended_by_sigterm_leaves_none_of_its_processes_running(tmp_path):
    # given the soak's command line, running, with its workers and beat started
    server = database_url().rsplit("/", 1)[0]
    database = f"{connection.settings_dict['NAME']}_soak_cli"  # a database of its own
    env = {**os.environ, "DATABASE_URL": f"{server}/postgres", "SCENARIO_DATABASE": database}
    argv = [sys.executable, "-m", "scripts.scenario", "--agreements", "2", "--days", "30", "--workers", "2"]
    argv += ["--emulator", plugin.emulator_that_runs()]
    log = tmp_path / "soak.log"
    with log.open("wb") as out:
        soak = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    me = psutil.Process(soak.pid)
    started: list[psutil.Process] = []
    try:

        def workers_and_beat() -> bool:
            commands = celery_commands(me)
            return sum(" worker " in c for c in commands) >= 2 and any(" beat " in c for c in commands)

        wait_until(workers_and_beat, 180)
        started = me.children(recursive=True)  # the endpoint (ministack's process) too, if any

        # when it is sent SIGTERM (a CI timeout, a kill)
        soak.terminate()
        code = soak.wait(90)

        # then it ends as interrupted, and every process it started has ended with it
        assert code == 128 + signal.SIGTERM, log.read_text()[-2000:]
        _, alive = psutil.wait_procs(started, timeout=10)
        assert alive == [], log.read_text()[-2000:]
    finally:
        leftover = [*started, *me.children(recursive=True)] if soak.poll() is None else started
        for proc in [me, *leftover]:  # whatever went wrong, nothing is left behind
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        drop_database(server, database)


SIGNAL_SCRIPT = """
import os, signal, sys
from scripts.scenario.signals import starting, stop_on_signals
stop_on_signals()
try:
    with starting():
        os.kill(os.getpid(), signal.SIGTERM)
        print("started and recorded", flush=True)  # the signal waited for this
    print("not reached", flush=True)
except SystemExit as exc:
    print("exit", exc.code, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # a second one, while stopping: ignored
    os.kill(os.getpid(), signal.SIGHUP)
    print("stopping went on", flush=True)
    sys.exit(exc.code)
"""


def test_a_stopping_signal_waits_for_a_process_being_started_and_only_the_first_interrupts():
    done = subprocess.run([sys.executable, "-c", SIGNAL_SCRIPT], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.splitlines() == ["started and recorded", "exit 143", "stopping went on"], done.stderr
    assert done.returncode == 143


def test_a_hangup_ignored_from_the_start_stays_ignored():  # nohup python -m scripts.scenario ...
    script = (
        "import os, signal; signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "from scripts.scenario.signals import stop_on_signals; stop_on_signals()\n"
        "os.kill(os.getpid(), signal.SIGHUP); print('still running')"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "still running" and done.returncode == 0, done.stderr
