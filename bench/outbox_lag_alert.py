"""How soon an outbox backlog nobody publishes raises ``alert.outbox_lagging`` at the endpoint.

    cd bench && ../.venv/bin/python outbox_lag_alert.py [--backlog 100000]

A running stack's ops worker (monitoring on its own queue) and beat, as ``make run`` starts
them, but no worker for the bulk queues: the relay is stuck. ``--backlog`` fresh unpublished
events appear at once (what a daily run over 100,000 agreements leaves), then the clock runs
until the alert is in the alerts consumer's SQS queue. The expected bound, from the settings,
is printed beside it: the lag threshold (MONITOR_OUTBOX_MAX_AGE_SECONDS) plus one monitoring
interval (MONITOR_INTERVAL_SECONDS). Issue 17's target: within 2 minutes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import _env
import _stack
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from devsupport.backlog import outbox_backlog_insert
from events import topology
from events.topology import aws

ALERT = "alert.outbox_lagging"


def alert_arrived(url: str) -> bool:
    msgs = aws.client("sqs").receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=0
    )
    return any(json.loads(m["Body"]).get("type") == ALERT for m in msgs.get("Messages", []))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, default=100_000)
    args = parser.parse_args()
    with connection.cursor() as cur:
        cur.execute("TRUNCATE events_outboxevent, events_alertstate")
    call_command("periodic_tasks_sync", reset=True, stdout=io.StringIO())  # beat runs the settings' schedule
    url = aws.queue_url(topology.event_queue_name("alerts_mail"))
    aws.client("sqs").purge_queue(QueueUrl=url)
    tmp = Path(tempfile.mkdtemp(prefix="lag-alert-"))
    env = dict(os.environ, LOG_LEVEL="WARNING")
    procs = [*_stack.workers(env, tmp, only=("ops",)), _stack.beat(env, tmp)]
    try:
        time.sleep(5)  # both connected and idle
        t0 = time.perf_counter()
        outbox_backlog_insert(args.backlog, spread_seconds=1)
        inserted = time.perf_counter() - t0
        while not alert_arrived(url):
            if time.perf_counter() - t0 > 900:
                raise SystemExit(f"no {ALERT} after 15 minutes; logs in {tmp}")
        elapsed = time.perf_counter() - t0
    finally:
        for p in procs:
            _stack.stop(p)
    bound = settings.MONITOR_OUTBOX_MAX_AGE_SECONDS + settings.MONITOR_INTERVAL_SECONDS
    _env.report(
        [
            ("backlog", f"{args.backlog:,} unpublished events, inserted in {inserted:.1f} s, relay stopped"),
            (
                "alert at the endpoint",
                f"{elapsed:.0f} s after the backlog appeared; bound from settings {bound} s "
                f"(lag threshold {settings.MONITOR_OUTBOX_MAX_AGE_SECONDS} s + monitoring every "
                f"{settings.MONITOR_INTERVAL_SECONDS} s); target <= 120 s",
            ),
        ]
    )


if __name__ == "__main__":
    main()
