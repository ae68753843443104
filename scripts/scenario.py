"""Scenario harness: a simulated billing history over the real parts, with faults, then invariants.

Real parts: PostgreSQL, moto's server over HTTP, several Celery worker processes (task queues
and push consumers), the sandbox gateway. The harness plays beat (one daily run per simulated
day) and the upstream system (agreement changes through the services), and injects faults:
SIGKILL of a worker mid-work, the SNS/SQS endpoint down, PostgreSQL connections terminated,
every event delivered again (duplicated, in any order), beat down for three days then catch-up,
poison messages, two daily runs at once. The seed is printed so a failure can be replayed.

Invariants checked afterwards:
  1. every billable period of every agreement has exactly one invoice (an independent oracle
     computes the periods from the harness's own log of what it did);
  2. every invoice has at most one successful charge at the gateway and its status matches
     its payment;
  3. every committed domain change has exactly one event in the store, and it was published;
  4. no message is left in any queue; the DLQs hold only the deliberately poisoned messages.

The CI version is tests/test_scenario.py (minutes). The soak: ``python -m scripts.scenario``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Plan:
    """What the harness did to one agreement (the oracle's input)."""

    start: date
    interval: str
    count: int
    end: date | None
    prices: list[tuple[date, int]] = field(default_factory=list)  # (effective_from, amount)
    pauses: list[list[date | None]] = field(default_factory=list)  # [paused_from, resumed_from]
    cancel: date | None = None


@dataclass
class Report:
    seed: int
    faults: Counter[str] = field(default_factory=Counter)
    messages: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def table(self) -> str:
        rows = [("seed", str(self.seed))]
        rows += [(f"fault: {k}", str(v)) for k, v in sorted(self.faults.items())]
        rows += [(k, str(v)) for k, v in self.messages.items()]
        rows.append(("invariant violations", str(len(self.violations))))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


FAULT_KINDS = (
    "worker SIGKILL mid-task",
    "worker SIGKILL mid-batch",
    "SNS/SQS endpoint down",
    "PostgreSQL connections terminated",
    "every event delivered 2-3 times, shuffled",
    "beat down 3 days, then catch-up",
    "poison messages",
    "two daily runs at once",
)


class Fleet:
    """The worker processes and the beat process, each in its own process group."""

    def __init__(self, workers: int, env: dict[str, str]) -> None:
        self.env = env
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * workers
        self.beat: subprocess.Popen[bytes] | None = None
        for i in range(workers):
            self.start_worker(i)
        self.start_beat()

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "billing_project", *args, "-l", "WARNING"],
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start_worker(self, i: int) -> None:
        self.workers[i] = self._spawn(
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "4",
            "-n",
            f"scenario{i}-{os.getpid()}@%h",
            "-Q",
            "default,events,invoicing,payments",
        )

    def start_beat(self) -> None:
        self.beat = self._spawn(
            "beat", "--pidfile=", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"
        )

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kill_worker(self, i: int) -> None:
        self._kill(self.workers[i])
        self.workers[i] = None

    def kill_beat(self) -> None:
        self._kill(self.beat)
        self.beat = None

    def supervise(self, report: Report) -> None:
        """Like a process supervisor: a process that exited on its own is a violation; restart it."""
        for i, proc in enumerate(self.workers):
            if proc is not None and proc.poll() is not None:
                report.violations.append(f"worker {i} exited on its own (code {proc.returncode})")
                self.start_worker(i)
        if self.beat is not None and self.beat.poll() is not None:
            report.violations.append(f"beat exited on its own (code {self.beat.returncode})")
            self.start_beat()

    def stop_beat(self) -> None:
        if self.beat is not None and self.beat.poll() is None:
            os.killpg(self.beat.pid, signal.SIGTERM)
            self.beat.wait(30)
        self.beat = None

    def stop(self) -> None:
        procs = [p for p in (*self.workers, self.beat) if p is not None and p.poll() is None]
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                self._kill(proc)


def expected_periods(plan: Plan, last_run: date) -> list[tuple[date, int]]:
    """The oracle: which period starts are billable by ``last_run``, and at what price."""
    from billing_project.periods import period_start

    out = []
    k = 0
    while True:
        start = period_start(plan.start, plan.interval, plan.count, k)
        k += 1
        if start > last_run or (plan.end and start >= plan.end) or (plan.cancel and start >= plan.cancel):
            return out
        paused = any(p[0] <= start and (p[1] is None or start < p[1]) for p in plan.pauses)
        if paused:
            continue
        # stable sort by date: among changes effective the same day, the later one wins
        amount = [a for eff, a in sorted(plan.prices, key=lambda p: p[0]) if eff <= start][-1]
        out.append((start, amount))


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(interval)
    return True


class Duplicator:
    """Sends every published event 1-2 more times to each queue subscribed to it, shuffled.

    Straight to the queues (as SNS raw delivery puts them there), a day's worth at a time, so
    consumers see each event 2-3 times in any order, and queues never grow deep.
    """

    def __init__(self, rng: random.Random) -> None:
        from events import topology

        self.rng = rng
        self.done: set[str] = set()
        self.since: datetime | None = None
        self.copies = 0
        self.subscribers: dict[str, list[str]] = defaultdict(list)
        for eq in (*topology.EVENT_QUEUES, *_extra_event_queues()):
            for types in eq.subscriptions.values():
                for event_type in types:
                    self.subscribers[event_type].append(eq.consumer)

    def run(self) -> None:
        from django.utils import timezone

        from events import topology
        from events.models import OutboxEvent
        from events.relay import batches
        from events.replay import send_to_queue

        started = timezone.now()
        recent = OutboxEvent.objects.filter(published_at__isnull=False)
        if self.since is not None:  # a margin for rows committed late; the id set skips repeats
            recent = recent.filter(published_at__gte=self.since - timedelta(minutes=2))
        rows = [r for r in recent.order_by("published_at") if str(r.id) not in self.done]
        self.since = started
        sends = []
        for row in rows:
            self.done.add(str(row.id))
            for consumer in self.subscribers.get(row.type, []):
                sends += [(consumer, row)] * self.rng.randint(1, 2)
        self.rng.shuffle(sends)
        by_queue: dict[str, list[Any]] = defaultdict(list)
        for consumer, row in sends:
            by_queue[topology.event_queue_name(consumer)].append(row)
        for queue, queue_rows in by_queue.items():
            for group in batches(queue_rows):
                failed = send_to_queue(queue, group)
                if failed:
                    raise RuntimeError(f"duplicates refused by {queue}: {failed}")
                self.copies += len(group)


def _extra_event_queues() -> tuple[Any, ...]:
    from django.conf import settings

    return tuple(settings.EXTRA_EVENT_QUEUES)


def run(
    *,
    agreements: int,
    days: int,
    seed: int,
    worker_env: dict[str, str],
    workers: int = 2,
    outage_seconds: float = 60.0,
    restart_endpoint: Callable[[float], None],
    gateway_stats: Callable[[], dict[str, Any]],
    poison: int = 5,
    settle_timeout: float = 600.0,
) -> Report:
    """Drive the history and check the invariants.

    Django must be set up and the queues provisioned. The beat process runs the project's
    periodic tasks (relay sweep, payment retries, monitoring) on their wall-clock intervals;
    the daily invoice run follows the simulated calendar, so the harness sends it (one per
    simulated day) and its beat entry is disabled here.
    """
    from django.db import connection
    from django.db.models import Count
    from django_celery_beat.models import PeriodicTask

    from agreements.models import Agreement
    from agreements.services import (
        AgreementInput,
        agreement_cancel,
        agreement_change_price,
        agreement_create,
        agreement_pause,
        agreement_resume,
    )
    from billing_project.periods import next_period_start
    from events import aws, topology
    from events.models import OutboxEvent
    from events.schedules import periodic_tasks_sync
    from invoicing.models import Invoice
    from invoicing.tasks import issue_due_invoices
    from payments.gateway import HARD, SOFT
    from payments.models import Payment, PaymentAttempt

    rng = random.Random(seed)
    report = Report(seed=seed)
    print(f"scenario seed {seed}: {agreements} agreements, {days} days", flush=True)
    periodic_tasks_sync(reset=True)
    PeriodicTask.objects.filter(task="invoicing.issue_due_invoices").update(enabled=False)
    plans: dict[str, Plan] = {}
    domain_changes: Counter[str] = Counter()
    d0 = date.today() - timedelta(days=days + 1)
    sqs = aws.client("sqs")
    duplicator = Duplicator(rng)
    beat_down = set(range(days // 2, days // 2 + 3))
    kill_task_day, kill_batch_day = max(1, days // 4), max(2, (3 * days) // 4)
    outage_day, terminate_day, double_run_day = days // 3, (2 * days) // 3, max(1, days // 5)
    poison_day = max(1, days // 2 - 1)
    last_run = d0
    fleet = Fleet(workers, worker_env)
    began = time.monotonic()
    try:
        for i in range(days):
            day = d0 + timedelta(days=i)
            fleet.supervise(report)
            # upstream: new agreements in the first third, changes on the others
            if i < max(1, days // 3):
                for _ in range(-(-agreements // max(1, days // 3))):  # ceil: all of them by then
                    if len(plans) >= agreements:
                        break
                    interval = rng.choice(["day", "day", "week", "month", "year"])
                    count = rng.randint(1, 2) if interval != "year" else 1
                    start = day + timedelta(days=rng.randint(0, 3))
                    end = start + timedelta(days=rng.randint(10, days)) if rng.random() < 0.2 else None
                    amount = rng.randint(100, 10_000)
                    a = agreement_create(
                        data=AgreementInput(
                            external_ref=f"S{seed}-{len(plans)}",
                            customer_name="Sim",
                            customer_email="sim@example.com",
                            amount_minor=amount,
                            currency=rng.choice(["EUR", "USD"]),
                            interval=interval,
                            interval_count=count,
                            start_date=start,
                            end_date=end,
                            customer_ref=f"cus-{len(plans)}",
                        )
                    )
                    plans[str(a.id)] = Plan(start, interval, count, end, prices=[(start, amount)])
                    domain_changes["agreement.created"] += 1
            for agreement_id, plan in rng.sample(sorted(plans.items()), k=min(len(plans), 3)):
                a = Agreement.objects.get(pk=agreement_id)
                roll = rng.random()
                if a.status == "active" and roll < 0.35:
                    amount = rng.randint(100, 10_000)
                    agreement_change_price(agreement_id=agreement_id, amount_minor=amount, today=day)
                    plan.prices.append(
                        (next_period_start(plan.start, plan.interval, plan.count, day), amount)
                    )
                    domain_changes["agreement.price_changed"] += 1
                elif a.status == "active" and roll < 0.55:
                    agreement_pause(agreement_id=agreement_id, from_date=day + timedelta(days=1))
                    plan.pauses.append([day + timedelta(days=1), None])
                    domain_changes["agreement.paused"] += 1
                elif a.status == "paused" and roll < 0.8:
                    agreement_resume(agreement_id=agreement_id, from_date=day + timedelta(days=1))
                    plan.pauses[-1][1] = day + timedelta(days=1)
                    domain_changes["agreement.resumed"] += 1
                elif a.status in ("active", "paused") and roll > 0.95:
                    at_end = rng.random() < 0.5
                    a = agreement_cancel(agreement_id=agreement_id, at_period_end=at_end, today=day)
                    plan.cancel = a.cancel_effective_date
                    domain_changes["agreement.cancelled"] += 1
            # faults that do not need work in flight
            if i == outage_day:
                restart_endpoint(outage_seconds)
                report.faults["SNS/SQS endpoint down"] += 1
            if i == terminate_day:
                with connection.cursor() as cur:
                    cur.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                    report.messages["PostgreSQL connections terminated"] = cur.fetchone()[0]
                report.faults["PostgreSQL connections terminated"] += 1
            if i == poison_day:
                for consumer in ("invoicing", "payments"):
                    url = aws.queue_url(topology.event_queue_name(consumer))
                    for n in range(poison):
                        body = rng.choice(["not json", "[]", json.dumps({"id": n}), "{" * 5000])
                        sqs.send_message(QueueUrl=url, MessageBody=body)
                report.faults["poison messages"] += 2 * poison
            # beat: down for three days (no daily run, no relay sweep, no payment retries)
            if i in beat_down:
                if i == min(beat_down):
                    fleet.kill_beat()
                    report.faults["beat down 3 days, then catch-up"] += 1
                continue
            if fleet.beat is None:
                fleet.start_beat()  # the next run catches up the days it missed
            # like beat at 02:00, after the day's changes reached invoicing
            _wait_for_events(300)
            issue_due_invoices.apply_async(kwargs={"run_date": day.isoformat()})
            if i == double_run_day:
                issue_due_invoices.apply_async(kwargs={"run_date": day.isoformat()})
                report.faults["two daily runs at once"] += 1
            last_run = day
            if i == kill_task_day:
                _kill_when(fleet, rng, report, "worker SIGKILL mid-task", lambda: _in_flight("tasks"))
            if i == kill_batch_day:
                _kill_when(fleet, rng, report, "worker SIGKILL mid-batch", lambda: _in_flight("events"))
            time.sleep(0.5)
            duplicator.run()
            if (i + 1) % max(1, days // 10) == 0:
                print(
                    f"  day {i + 1}/{days}: {Invoice.objects.count()} invoices, "
                    f"{duplicator.copies} duplicates sent, {time.monotonic() - began:.0f}s",
                    flush=True,
                )

        def outbox_drained() -> bool:  # beat's relay sweep publishes what the kicks left
            return not OutboxEvent.objects.filter(published_at__isnull=True).exists()

        fleet.supervise(report)
        wait_until(outbox_drained, settle_timeout, "outbox drained")
        _settle(settle_timeout, duplicator)
        report.faults["every event delivered 2-3 times, shuffled"] += 1
        # beat stops sending housekeeping tasks; the workers finish what is queued
        fleet.stop_beat()
        wait_until(lambda: not _busy_queues(), settle_timeout, "every queue drained")
    finally:
        fleet.stop()

    # -- invariants --------------------------------------------------------------------------
    v = report.violations
    all_invoices = list(Invoice.objects.all())
    invoices = defaultdict(list)
    for inv in all_invoices:
        invoices[inv.agreement_id].append((inv.period_start, inv.total_minor))
    for agreement_id, plan in plans.items():
        expected = expected_periods(plan, last_run)
        got = sorted(invoices.get(agreement_id, []))
        if got != expected:
            diff = sorted(set(expected) ^ set(got))[:4]
            v.append(f"agreement {agreement_id}: expected {len(expected)} invoices, got {len(got)}: {diff}")
    stats = gateway_stats()
    doubles = [k for k, n in stats["charges_by_key"].items() if n > 1]
    if doubles:
        v.append(f"{len(doubles)} idempotency keys charged more than once")
    by_invoice = {p.invoice_id: p for p in Payment.objects.all()}
    charged = Counter(k.split("#")[0] for k in stats["charges_by_key"])
    for inv in all_invoices:
        payment = by_invoice.get(str(inv.id))
        if payment is None:
            v.append(f"invoice {inv.number} has no payment")
            continue
        if charged.get(f"pay-{payment.id}", 0) > 1:
            v.append(f"invoice {inv.number} charged {charged[f'pay-{payment.id}']} times")
        want = {"succeeded": "paid", "failed": "uncollectible"}.get(payment.status, "open")
        if inv.status != want:
            v.append(f"invoice {inv.number} is {inv.status} but its payment is {payment.status}")
    committed = {
        **domain_changes,
        "invoice.issued": len(all_invoices),
        "payment.succeeded": sum(p.status == "succeeded" for p in by_invoice.values()),
        # one per declined attempt: a soft decline (dunning goes on) and the final one
        "payment.failed": PaymentAttempt.objects.filter(outcome__in=[SOFT, HARD]).count(),
    }
    stored = dict(OutboxEvent.objects.values_list("type").annotate(n=Count("id")))
    for event_type, n in committed.items():
        if stored.get(event_type, 0) != n:
            v.append(f"{event_type}: {n} committed changes, {stored.get(event_type, 0)} events in the store")
    if OutboxEvent.objects.filter(published_at__isnull=True).exists():
        v.append("unpublished events left in the outbox")
    depths = _depths()
    left = {q: d for q, d in depths.items() if not q.endswith("-dlq") and d}
    if left:
        v.append(f"messages left in queues: {left}")
    dead = sum(d for q, d in depths.items() if q.endswith("-dlq"))
    if dead != 2 * poison:
        v.append(f"DLQs hold {dead} messages, expected only the {2 * poison} poisoned ones: {depths}")
    report.messages = {
        "agreements": len(plans),
        "domain changes by the upstream": sum(domain_changes.values()),
        "invoices": Invoice.objects.count(),
        "payments succeeded": Payment.objects.filter(status="succeeded").count(),
        "payments failed for good": Payment.objects.filter(status="failed").count(),
        "gateway charges": stats["charges"],
        "events in store, all published": OutboxEvent.objects.count(),
        "duplicate deliveries sent": duplicator.copies,
        "messages in DLQs": dead,
        **report.messages,
    }
    return report


def _kill_when(fleet: Fleet, rng: random.Random, report: Report, kind: str, busy: Callable[[], bool]) -> None:
    """SIGKILL a worker as soon as ``busy()`` says work is in flight, then start it again."""
    try:
        wait_until(busy, 30, kind, interval=0.02)
    except TimeoutError:
        report.violations.append(f"{kind}: no work was in flight to kill within 30 s")
        return
    victim = rng.randrange(len(fleet.workers))
    fleet.kill_worker(victim)
    fleet.start_worker(victim)
    report.faults[kind] += 1


def _in_flight(kind: str) -> bool:
    from events.monitoring import queue_stats

    return any(s.in_flight for s in queue_stats(with_age=False) if s.kind == kind and not s.is_dlq)


def _depths() -> dict[str, int]:
    from events.monitoring import queue_stats

    return {s.name: s.visible + s.in_flight + s.delayed for s in queue_stats(with_age=False)}


def _busy_queues() -> list[str]:
    return [q for q, depth in _depths().items() if depth and not q.endswith("-dlq")]


def _wait_for_events(timeout: float) -> None:
    from events import dlq, topology
    from events.models import OutboxEvent

    def done() -> bool:
        return (
            not OutboxEvent.objects.filter(published_at__isnull=True, type__startswith="agreement.").exists()
            and dlq.depth(topology.event_queue_name("invoicing")) == 0
        )

    wait_until(done, timeout, "agreement events handled by invoicing")


def _settle(timeout: float, duplicator: Duplicator) -> None:
    """Quiet: event queues empty, outbox published, no charge pending, three checks in a row.

    Beat's relay sweep and payment retries do the work; the harness only duplicates what
    was published since its last pass."""
    from events.models import OutboxEvent
    from payments.models import Payment

    quiet = 0
    deadline = time.monotonic() + timeout
    while quiet < 3:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the system did not settle in {timeout:.0f}s: {_depths()}")
        duplicator.run()
        # beat's housekeeping tasks (relay sweep, retries, monitoring) come and go on their own
        # task queues all the time; the work is in the event queues and the invoicing queue
        busy = (
            any(q.endswith(("-events", "-celery-invoicing")) for q in _busy_queues())
            or OutboxEvent.objects.filter(published_at__isnull=True).exists()
            or Payment.objects.filter(status__in=["pending", "processing"]).exists()
        )
        quiet = 0 if busy else quiet + 1
        time.sleep(2)


def main() -> None:
    """The soak: ``python -m scripts.scenario --agreements 1000 --days 90 [--seed N]``.

    Uses DATABASE_URL's server (default 127.0.0.1:5432) with its own database
    ``billing_scenario`` (recreated), ministack (or ``--emulator moto``), the sandbox gateway.
    """
    import argparse
    import urllib.request

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

    from scripts.devstack import DEFAULT_LOCAL_DB, with_database

    if args.emulator == "ministack":
        from scripts.ministack import Ministack

        state = Path(tempfile.mkdtemp(prefix="scenario-ministack-"))
        emulator = Ministack(state_dir=state)
        endpoint = emulator.start()

        def restart_endpoint(seconds: float) -> None:
            emulator.stop()  # it saves its queues and messages, as SQS keeps them through an outage
            time.sleep(seconds)
            emulator.start()

        stop_endpoint = emulator.stop
    else:
        from moto.server import ThreadedMotoServer

        from scripts.devstack import free_port

        os.environ["MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR"] = "false"
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        holder = {"server": ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)}
        holder["server"].start()

        def restart_endpoint(seconds: float) -> None:
            holder["server"].stop()
            time.sleep(seconds)
            holder["server"] = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            holder["server"].start()

        def stop_endpoint() -> None:
            holder["server"].stop()

    import psycopg2

    server_url = os.environ.get("DATABASE_URL") or DEFAULT_LOCAL_DB
    conn = psycopg2.connect(with_database(server_url, "postgres").replace("postgres://", "postgresql://"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS billing_scenario WITH (FORCE)")
        cur.execute("CREATE DATABASE billing_scenario")
    conn.close()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "billing_project.settings.dev",
        "DATABASE_URL": with_database(server_url, "billing_scenario"),
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
        "HEARTBEAT_INTERVAL_SECONDS": "30",
    }
    from payments.sandbox import SandboxConfig, start_in_thread

    gateway = start_in_thread(SandboxConfig(seed=args.seed, soft_decline_rate=0.05, transient_rate=0.05))
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

    try:
        report = run(
            agreements=args.agreements,
            days=args.days,
            seed=args.seed,
            worker_env=env,
            workers=args.workers,
            outage_seconds=args.outage_seconds,
            restart_endpoint=restart_endpoint,
            gateway_stats=stats,
            settle_timeout=3600,
        )
    finally:
        gateway.shutdown()
        stop_endpoint()
    print(report.table())
    for violation in report.violations[:50]:
        print("VIOLATION:", violation)
    sys.exit(1 if report.violations else 0)


if __name__ == "__main__":
    main()
