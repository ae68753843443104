"""The soak's command line: ``python -m scripts.scenario --agreements 1000 --days 90 [--seed N]``."""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from .harness import run
from .signals import starting, stop_on_signals


def main() -> None:
    """The soak: ``python -m scripts.scenario --agreements 1000 --days 90 [--seed N]``.

    Uses DATABASE_URL's server (default 127.0.0.1:5432) with its own database
    ``billing_scenario`` (recreated; ``SCENARIO_DATABASE`` names another, for a server several
    checkouts share), ministack (or ``--emulator moto``), the sandbox gateway.
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--agreements", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(10**9))
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--outage-seconds", type=float, default=60.0)
    parser.add_argument(
        "--emulator",
        choices=["ministack", "moto"],
        default="ministack",
        help="the SNS/SQS endpoint: ministack (its own process and virtualenv, fast on deep "
        "queues) or moto's server in this process (what CI uses; too slow for 1,000 x 90)",
    )
    args = parser.parse_args()
    stop_on_signals()  # TERM or HUP (a CI timeout, a closed terminal) ends it as Ctrl-C does

    from devsupport.endpoint import local_endpoint

    state = Path(tempfile.mkdtemp(prefix="scenario-ministack-")) if args.emulator == "ministack" else None
    # moto in this process keeps its queues across the outage; ministack saves them to ``state``
    emulator = local_endpoint(args.emulator, state_dir=state, in_process=True)
    try:  # from here on, whatever ends the soak (a signal too) stops what it started
        with starting():
            endpoint = emulator.start()
        report = _soak(args, endpoint, emulator)
    finally:
        emulator.stop()
    print(report.table())
    for violation in report.violations[:50]:
        print("VIOLATION:", violation)
    sys.exit(1 if report.violations else 0)


def _soak(args: Any, endpoint: str, emulator: Any) -> Any:
    """The soak on a started endpoint: its database, settings, gateway and run; the report."""
    import urllib.request

    from devsupport.database import DEFAULT_SERVER_URL, ensure_database

    server_url = os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
    database = os.environ.get("SCENARIO_DATABASE", "billing_scenario")
    database_url = ensure_database(server_url, database, recreate=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "billing_project.settings.dev",
        "DATABASE_URL": database_url,
        "AWS_ENDPOINT_URL": endpoint,
        "RESOURCE_PREFIX": "billing-scenario-",
        "OUTBOX_KICK_RELAY": "true",
        "CONSUMER_WAIT_SECONDS": "1",
        "CONSUMER_RETRY_BASE_SECONDS": "1",
        "PAYMENT_TRANSIENT_BACKOFF_SECONDS": "1",
        "PAYMENT_CHARGE_LEASE_SECONDS": "600",
        "PAYMENT_PROCESSING_STALE_SECONDS": "30",
        "CELERY_TASK_TIME_LIMIT": "60",
        "CELERY_MAX_COUNTDOWN": "30",
        "CELERY_VISIBILITY_MARGIN": "10",
        "MESSAGING_EVENT_VISIBILITY_TIMEOUT": "20",
        "LOG_LEVEL": "WARNING",
        # beat's periodic tasks on short wall-clock intervals
        "OUTBOX_SWEEP_SECONDS": "2",
        "PAYMENT_RETRY_SWEEP_SECONDS": "5",
        "MONITOR_INTERVAL_SECONDS": "30",
        # the delivery audit repairs a purged queue within a couple of minutes
        "DELIVERY_AUDIT_INTERVAL_SECONDS": "10",
        "DELIVERY_AUDIT_GRACE_SECONDS": "90",
        "HEARTBEAT_INTERVAL_SECONDS": "30",
        "INVOICING_WATCHDOG_SECONDS": "5",
        "INVOICING_CHUNK_STALE_SECONDS": "10",
        # the simulated calendar lies in the past: every late change is corrected, whatever its age
        "INVOICING_MAX_CORRECTION_DAYS": "100000",
    }
    from devsupport.sandbox_gateway import SandboxConfig, start_in_thread

    gateway = start_in_thread(SandboxConfig(seed=args.seed, soft_decline_rate=0.05, transient_rate=0.05))
    try:
        env["PAYMENT_GATEWAY_URL"] = gateway.url
        os.environ.update(env)
        import django

        django.setup()
        # moto's SQS is not thread-safe: under load some calls fail with a 500 and a traceback in
        # werkzeug's log (the clients retry them). Keep the soak's output to the progress and table.
        import logging

        logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        call_command("messaging_provision", verbosity=0)

        def stats() -> dict[str, Any]:
            with urllib.request.urlopen(f"{gateway.url}/v1/_stats") as resp:
                return dict(json.load(resp))

        def configure(**config: Any) -> None:
            for key, value in config.items():
                setattr(gateway.sandbox.config, key, value)

        return run(
            agreements=args.agreements,
            days=args.days,
            seed=args.seed,
            worker_env=env,
            workers=args.workers,
            outage_seconds=args.outage_seconds,
            restart_endpoint=emulator.restart,
            gateway_stats=stats,
            gateway_config=configure,
            settle_timeout=3600,
        )
    finally:
        gateway.shutdown()


if __name__ == "__main__":
    main()
