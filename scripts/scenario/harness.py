"""The scenario harness: a simulated billing history over the real parts, with faults, then the oracle.

Real parts: PostgreSQL, the SNS/SQS endpoint over HTTP, several Celery worker processes (task queues
and push consumers), a real beat process, the sandbox gateway. The harness plays the upstream system
(agreement changes through the agreements services), the operators (voids), and the calendar: one
daily run per simulated day (beat's daily-run entry is disabled; beat runs everything else on its
wall-clock schedule). Then it lets the system settle and checks the invariants (oracle.py).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from devsupport.waiting import wait_until

from . import faults
from .faults import CopyKiller, Duplicator, LateEvents, OperatorVoids
from .fleet import Fleet
from .loss import QueueLoss
from .oracle import Expectations, check, check_delivery, check_queues, depths, resent_by_audit, unaccounted
from .upstream import Upstream

FAULT_KINDS = (
    "worker SIGKILL mid-task",
    "worker SIGKILL mid-batch",
    "SNS/SQS endpoint down",
    "PostgreSQL connections terminated",
    CopyKiller.KIND,
    "every event delivered 2-3 times, shuffled",
    *faults.LATE_KINDS.values(),
    "beat down 3 days, then catch-up",
    OperatorVoids.IN_DUNNING,
    OperatorVoids.IN_FLIGHT,
    "hostile text in names and descriptions (10 kB refused)",
    "poison messages",
    "two daily runs at once",
    QueueLoss.KIND,
)


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
    gateway_config: Callable[..., None],
    poison: int = 5,
    late_ratio: float = 0.2,
    settle_timeout: float = 600.0,
) -> Report:
    """Drive the history and check the invariants. Django must be set up and the queues provisioned."""
    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    from core.schedules import periodic_tasks_sync
    from events.models import OutboxEvent
    from invoicing.models import Invoice
    from invoicing.tasks import issue_due_invoices
    from payments.models import Payment

    # two streams: the upstream's history is the seed's alone; the faults' draws depend on timing
    # (how many rows each duplication pass finds), so they must not shift the history. Agreements
    # are picked in the order they were created (their ids are random: sorted, the same seed
    # changed different agreements on each run)
    rng, fault_rng = random.Random(seed), random.Random(f"{seed}/faults")
    report = Report(seed=seed)
    print(f"scenario seed {seed}: {agreements} agreements, {days} days", flush=True)
    periodic_tasks_sync(reset=True)
    PeriodicTask.objects.filter(task="invoicing.issue_due_invoices").update(enabled=False)
    late = LateEvents()
    upstream = Upstream(rng, seed, late, report)
    voids = OperatorVoids(gateway_config)
    copy_killer = CopyKiller()
    d0 = date.today() - timedelta(days=days + 1)
    duplicator = Duplicator(fault_rng)
    creation_days = max(1, days // 3)
    beat_down = set(range(days // 2, days // 2 + 3))
    kill_task_day, kill_batch_day = max(1, days // 4), max(2, (3 * days) // 4)
    outage_day, terminate_day, double_run_day = days // 3, (2 * days) // 3, max(1, days // 5)
    poison_day, late_day, flight_day = max(1, days // 2 - 1), max(1, creation_days - 2), max(2, days // 4 + 1)
    copy_kill_day = days - 2
    queue_loss, loss_day = QueueLoss("payments"), max(1, days // 3 + 1)
    while loss_day in beat_down or loss_day in (poison_day, kill_task_day, kill_batch_day):
        loss_day += 1  # a day of its own, with a daily run (poison purged with the queue would be lost)
    last_run = d0
    dead_letters = 0
    began = time.monotonic()
    fleet = Fleet(workers, worker_env)
    try:
        for i in range(days):
            day = d0 + timedelta(days=i)
            fleet.supervise(report.violations)
            # upstream: new agreements in the first third, changes on the others
            if i < creation_days:
                for _ in range(-(-agreements // creation_days)):  # ceil: all of them by then
                    if len(upstream.plans) < agreements:
                        upstream.create(day, days)
            if i == 0:
                upstream.refuse_ten_kb_text(day)
            for agreement_id in rng.sample(list(upstream.plans), k=min(len(upstream.plans), 3)):
                upstream.change(agreement_id, day, late=rng.random() < late_ratio)
            if i in (late_day, late_day + 1):
                upstream.late_changes(day, i - late_day)
            # faults that do not need work in flight
            if i == outage_day:
                restart_endpoint(outage_seconds)
                report.faults["SNS/SQS endpoint down"] += 1
            if i == terminate_day:
                report.messages["PostgreSQL connections terminated"] = faults.terminate_connections()
                report.faults["PostgreSQL connections terminated"] += 1
            if i == poison_day:
                dead_letters += faults.poison(fault_rng, poison)
                report.faults["poison messages"] += 2 * poison
            # beat: down for three days (no daily run, sweep or payment retries)
            if i in beat_down:
                if i == min(beat_down):
                    fleet.kill_beat()
                    report.faults["beat down 3 days, then catch-up"] += 1
                continue
            if fleet.beat is None:
                fleet.start_beat()  # the next run catches up the days it missed
            # like beat at 02:00, after the day's (on-time) changes reached invoicing
            _wait_for_events(300, late.held_ids())
            if i >= copy_kill_day and not report.faults[CopyKiller.KIND]:
                copy_killer.arm()
            slow = i >= flight_day and not voids.done[OperatorVoids.IN_FLIGHT]
            if slow:
                voids.slow_gateway(1500)
            run_sent = timezone.now()
            if i >= loss_day and not report.faults[QueueLoss.KIND]:
                queue_loss.hold()
            issue_due_invoices.apply_async(kwargs={"run_date": day.isoformat()})
            if i == double_run_day:
                issue_due_invoices.apply_async(kwargs={"run_date": day.isoformat()})
                report.faults["two daily runs at once"] += 1
            last_run = day
            if i == kill_task_day and faults.kill_when(
                fleet, fault_rng, "mid-task", lambda: faults.in_flight("tasks")
            ):
                report.faults["worker SIGKILL mid-task"] += 1
            if i == kill_batch_day and faults.kill_when(
                fleet, fault_rng, "mid-batch", lambda: faults.in_flight("events")
            ):
                report.faults["worker SIGKILL mid-batch"] += 1
            if (
                i >= loss_day
                and not report.faults[QueueLoss.KIND]
                and queue_loss.strike(run_sent, duplicator)
            ):
                report.faults[QueueLoss.KIND] += 1
            _wait_for_run(day, 300)
            if slow:
                voids.in_flight()
                voids.slow_gateway(0)
            if copy_killer.armed:
                if copy_killer.fired():
                    report.faults[CopyKiller.KIND] += 1
                copy_killer.disarm()
            late.release(ran_until=day)  # the held events whose day's run has now passed
            if i >= kill_task_day and not voids.done[OperatorVoids.IN_DUNNING]:
                voids.in_dunning()
            duplicator.run()
            if (i + 1) % max(1, days // 10) == 0:
                print(
                    f"  day {i + 1}/{days}: {Invoice.objects.count()} invoices, "
                    f"{duplicator.copies} duplicates sent, {time.monotonic() - began:.0f}s",
                    flush=True,
                )
        late.release()
        fleet.supervise(report.violations)
        wait_until(
            lambda: not OutboxEvent.objects.filter(published_at__isnull=True).exists(),
            settle_timeout,
            "outbox drained",
        )
        _settle(settle_timeout, duplicator)
        report.faults["every event delivered 2-3 times, shuffled"] += 1
        report.faults.update(late.kinds)
        report.faults.update(voids.done)
        # beat stops sending housekeeping tasks; the workers finish what is queued
        fleet.stop_beat()
        wait_until(lambda: not _busy_queues(), settle_timeout, "every queue drained")
    finally:
        try:
            fleet.stop()  # first: nothing a failing step below skips
        finally:
            copy_killer.disarm()

    expect = Expectations(upstream.plans, last_run, upstream.changes, voids.waived, dead_letters)
    report.violations += check(expect, gateway_stats())
    report.violations += check_queues(dead_letters)
    report.violations += check_delivery()
    stats = gateway_stats()
    report.messages = {
        "agreements": len(upstream.plans),
        "domain changes by the upstream": sum(upstream.changes.values()),
        "invoices": Invoice.objects.count(),
        "invoices voided (operators and corrections)": Invoice.objects.filter(status="void").count(),
        "invoices reissued or supplementary (revision > 0)": Invoice.objects.filter(revision__gt=0).count(),
        "credit notes": _count("invoicing", "CreditNote"),
        "payments succeeded": Payment.objects.filter(status="succeeded").count(),
        "payments failed for good": Payment.objects.filter(status="failed").count(),
        "gateway charges": stats["charges"],
        "gateway refunds": stats["refunds"],
        "events in store, all published": OutboxEvent.objects.count(),
        "duplicate deliveries sent": duplicator.copies,
        "messages in DLQs": dead_letters,
        "events lost with a purged queue": queue_loss.lost,
        "events re-sent by the delivery audit": resent_by_audit(),
        "alert.delivery_gap raised": OutboxEvent.objects.filter(type="alert.delivery_gap").count(),
        **report.messages,
    }
    return report


def _count(app: str, model: str) -> int:
    from django.apps import apps

    return int(apps.get_model(app, model).objects.count())


def _busy_queues() -> list[str]:
    return [q for q, depth in depths().items() if depth and not q.endswith("-dlq")]


def _wait_for_events(timeout: float, held: list[Any]) -> None:
    from events import topology
    from events.consuming import dlq
    from events.models import OutboxEvent

    def done() -> bool:
        pending = OutboxEvent.objects.filter(published_at__isnull=True, type__startswith="agreement.")
        return (
            not pending.exclude(id__in=held).exists()
            and dlq.depth(topology.event_queue_name("invoicing")) == 0
        )

    wait_until(done, timeout, "agreement events handled by invoicing")


def _wait_for_run(day: date, timeout: float) -> None:
    """Every run sent for ``day`` has ended (its chunks done or failed: never left running)."""
    from invoicing.models import DailyRun

    def ended() -> bool:
        runs = DailyRun.objects.filter(run_date=day)
        return runs.exists() and not runs.filter(status="running").exists()

    wait_until(ended, timeout, f"the daily run of {day}")


def _settle(timeout: float, duplicator: Duplicator) -> None:
    """Quiet: event queues empty, outbox published, no charge or refund pending, three checks in a row.

    Beat's relay sweep and payment retries do the work; the harness only duplicates what
    was published since its last pass."""
    from django.conf import settings

    from events.models import OutboxEvent
    from payments.models import Payment, Refund

    quiet = 0
    deadline = time.monotonic() + timeout
    while quiet < 3:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the system did not settle in {timeout:.0f}s: {depths()}")
        duplicator.run()
        # beat's housekeeping tasks (relay sweep, retries, monitoring) come and go on their own
        # task queues all the time; the work is in the event queues and the invoicing queue
        busy = (
            any(q.endswith(("-events", "-celery-invoicing")) for q in _busy_queues())
            or OutboxEvent.objects.filter(published_at__isnull=True).exists()
            or Payment.objects.filter(status__in=["pending", "processing"]).exists()
            or Refund.objects.filter(status__in=["pending", "processing"]).exists()
            # lost events wait for the delivery audit's re-sends (beat), if it makes them
            or (settings.DELIVERY_AUDIT_REPAIR and bool(unaccounted(full=False)))
        )
        quiet = 0 if busy else quiet + 1
        time.sleep(2)
