"""The whole pipeline, stage by stage: a file of N agreements to N payments created.

    cd bench && ../.venv/bin/python pipeline.py [N]      # default 10,000; the issue's scale is 100,000

Runs a stack as ``make run`` does (PostgreSQL database ``billing_bench``, the local endpoint,
ministack unless ``BENCH_EMULATOR=moto``, the sandbox gateway, make run's workers (two alike,
each serving every bulk queue and running every push consumer, and the ops worker for monitoring)
and beat), then:

1. baselines, measured first, in the same run, on the same endpoint: the SQL floor (one
   INSERT ... SELECT of agreements and their outbox rows, rolled back), a plain PublishBatch loop
   at the relay's concurrency, and plain receive(10) + delete_batch loops on the invoicing and
   payments queues at a shallow depth (what a consumer could reach doing nothing), and each of those
   while a plain publishing loop in another process feeds its queue through its topic (what a stage
   could reach doing nothing: both sides of each event on the same cores);
2. ``agreements_import`` of an N-row file (agreements starting today, so each owes one invoice),
   first with nothing else running (its rows then removed), then into the running stack;
3. waits until the relay has published every ``agreement.created`` and the invoicing projection
   has handled them, runs ``invoices_issue`` and waits until payments has created N payments
   (charges are then paced by the gateway, which is not part of the figure);
4. counts the charges the gateway answered in the ``CHARGE_WINDOW`` seconds (15) after that,
   next to the gateway's rate limit (100/s): what "paced by the gateway" comes to. The sandbox
   answers at once unless ``GATEWAY_LATENCY_MS`` says otherwise (``make run``'s answers in 200).

Each stage prints when it finished (seconds from the start of the import), its active window
(first to last row, from the rows' own timestamps) and its rate next to its baseline's. Then where
the CPU went from the file to the payments (bench/_cpu.py: the workers and beat, the endpoint's
process, this machine's PostgreSQL, the sandbox gateway and the two commands; in all, per agreement
and in cores busy), the same for each stage (from the end of the one before to its own: what else
runs meanwhile is in it), and each charge's CPU over the charge window, in all and by part: the
figures that say how far the 2 cores are from the targets, and which part holds the time.

The totals (10,000 in <= 20 s, 100,000 in <= 180 s) are judged here; the stages' ratios to their
plain loops (import >= 25% of the SQL floor, relay >= 90%, consumers >= 60%) by the scripts that
measure each stage alone, as the issue's own figures for them were taken (``import_throughput.py``,
``relay_throughput.py``, ``batch_consumers.py``). Here a stage shares the 2 cores with every other
stage and the endpoint, and the plain loops then fall as far: the pair of plain loops, publishing
and draining at once, reaches 32-44% of the publishing loop measured alone and 59-64% of the drain
(2026-11-30). So each stage line also prints that pair, the most a stage could reach in a stack.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

os.environ["OUTBOX_KICK_RELAY"] = "true"  # as in make run: commits kick the relay

import _cpu  # noqa: E402
import _env  # noqa: E402
import _stack  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Max, Min  # noqa: E402
from django.utils import timezone  # noqa: E402

from devsupport.net import free_port, port_open  # noqa: E402
from devsupport.waiting import wait_until  # noqa: E402
from events import contracts, topology  # noqa: E402
from events.models import PRIORITY_BULK, OutboxEvent, ProcessedEvent  # noqa: E402
from events.publishing.outbox import NewEvent, build_row  # noqa: E402
from events.publishing.sns import message_attributes  # noqa: E402
from events.topology import aws  # noqa: E402
from invoicing.models import Invoice  # noqa: E402
from payments.models import Payment, PaymentAttempt  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
SAMPLE = 2_000  # messages per plain-loop baseline: shallow enough that the endpoint stays flat
GATEWAY_RATE = settings.PAYMENT_RATE_LIMIT_PER_SECOND  # the sandbox gateway takes what the workers pace to
GATEWAY_LATENCY_MS = int(os.environ.get("GATEWAY_LATENCY_MS", "0"))  # make run's sandbox: 200
CHARGE_WINDOW = float(os.environ.get("CHARGE_WINDOW", "15"))
ROOT = _env.ROOT
PY = sys.executable


def sql_floor(n: int = 10_000) -> float:
    """The SQL floor for N rows, extrapolated from n (rolled back; see _env.sql_floor)."""
    return _env.sql_floor(n) * (N / n)


def plain_publish(topic: str, event_type: str, n: int) -> float:
    """Seconds for a plain PublishBatch loop of n messages at the relay's concurrency."""
    data = {**_env.AGREEMENT_DATA}
    rows = [
        build_row(NewEvent(contracts.AGREEMENT_CREATED, f"B-{i}", 1, data), timezone.now()) for i in range(n)
    ]
    sns, arn = aws.client("sns"), aws.topic_arn(topology.topic_name(topic))

    def publish(chunk: list[OutboxEvent]) -> None:
        entries = []
        for j, r in enumerate(chunk):
            attrs = message_attributes(r)
            attrs["event_type"]["StringValue"] = event_type  # routes to the queue measured next
            entries.append({"Id": str(j), "Message": r.message_body(), "MessageAttributes": attrs})
        sns.publish_batch(TopicArn=arn, PublishBatchRequestEntries=entries)

    start = time.perf_counter()
    with ThreadPoolExecutor(settings.OUTBOX_RELAY_PUBLISH_CONCURRENCY) as pool:
        list(pool.map(publish, [rows[i : i + 10] for i in range(0, n, 10)]))
    return time.perf_counter() - start


def plain_drain(consumer: str, n: int) -> float:
    """Seconds for a plain receive(10) + delete_batch loop to take n messages off a queue."""
    url = aws.queue_url(topology.event_queue_name(consumer))
    wait_until(lambda: _depth(url) >= n, 60, f"{n} messages in {consumer}'s queue")
    start = time.perf_counter()
    _env.plain_receive_delete(url, n)
    return time.perf_counter() - start


def plain_through(topic: str, event_type: str, consumer: str, n: int) -> float:
    """Seconds for n events through a topic and off its consumer's queue by plain loops at once: the
    plain PublishBatch loop (in a process of its own, as the relay is) publishing while the plain
    receive+delete loop drains. What a stage does, both sides of each event on the same cores,
    with nothing parsed or written: that stage's own ceiling, next to the issue's (the drain alone)."""
    url = aws.queue_url(topology.event_queue_name(consumer))
    publisher = multiprocessing.get_context("fork").Process(target=plain_publish, args=(topic, event_type, n))
    start = time.perf_counter()
    publisher.start()
    _env.plain_receive_delete(url, n)
    publisher.join()
    return time.perf_counter() - start


def _depth(url: str) -> int:
    attrs = aws.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def window(qs, field: str) -> tuple[float, int]:  # noqa: ANN001 - any queryset
    """(seconds from the first to the last row, rows) by the rows' own timestamps."""
    agg = qs.aggregate(first=Min(field), last=Max(field))
    count = qs.count()
    if not count:
        return 0.0, 0
    return max((agg["last"] - agg["first"]).total_seconds(), 1e-3), count


def main() -> None:
    _env.clean(OutboxEvent, ProcessedEvent)
    floor = sql_floor()
    base_publish = plain_publish("agreements", "agreement.created", SAMPLE)
    base_invoicing = plain_drain("invoicing", SAMPLE)
    plain_publish("invoicing", "invoice.issued", SAMPLE)
    base_payments = plain_drain("payments", SAMPLE)
    through_invoicing = plain_through("agreements", "agreement.created", "invoicing", SAMPLE)
    through_payments = plain_through("invoicing", "invoice.issued", "payments", SAMPLE)
    tmp = Path(tempfile.mkdtemp(prefix="pipeline-"))
    import_alone = import_with_nothing_else(tmp)
    _env.clean(OutboxEvent, ProcessedEvent)

    env = dict(os.environ)
    gateway_port = free_port()
    env["PAYMENT_GATEWAY_URL"] = f"http://127.0.0.1:{gateway_port}"
    env["LOG_LEVEL"] = "WARNING"
    procs = [
        _stack.start(
            "gateway",
            [
                PY,
                "-m",
                "devsupport.sandbox_gateway",
                "--port",
                str(gateway_port),
                "--rate-limit",
                f"{GATEWAY_RATE:g}",
                "--latency-ms",
                str(GATEWAY_LATENCY_MS),
            ],
            env,
            tmp,
        ),
        *_stack.workers(env, tmp),
        _stack.beat(env, tmp),
    ]
    gateway, *stack = procs
    meter = _cpu.CpuMeter(
        {
            "workers": lambda: _cpu.pids_of(*(p.pid for p in stack)),  # and beat
            "endpoint": lambda: _cpu.pids_of(_env.SERVER.pid),
            "PostgreSQL": (lambda: _cpu.postgres_pids(_database_name())) if _database_is_here() else list,
            "gateway": lambda: _cpu.pids_of(gateway.pid),
        }
    )
    commands: dict[str, float] = {}  # CPU of each command, run to its end
    try:
        wait_until(lambda: port_open("127.0.0.1", gateway_port), 30, "gateway")
        time.sleep(8)  # the worker's consumers connect
        path = tmp / "agreements.csv"
        _env.write_agreements_file(path, N, "PIPE")
        created = OutboxEvent.objects.filter(type=contracts.AGREEMENT_CREATED)
        handled = ProcessedEvent.objects.filter(consumer="invoicing", event_type=contracts.AGREEMENT_CREATED)
        meter.start()
        meter.mark("start")
        before = _cpu.children_cpu()
        t0 = time.perf_counter()
        t_import = import_file(path, env)
        commands["import"] = _cpu.children_cpu() - before
        meter.mark("imported")
        # All N rows are in (the import has ended): the first unpublished one, read by the relay's
        # own index, not a count of the published (tens of ms every look, on the cores measured).
        unpublished = (
            created.filter(published_at__isnull=True, priority=PRIORITY_BULK, producer=topology.AGREEMENTS)
            .order_by("next_attempt_at", "occurred_at")  # the range of the index outbox_unpublished
            .values_list("pk")[:1]
        )
        wait_until(lambda: not list(unpublished.all()), 1800, "all published", interval=0.05)  # afresh
        t_published = time.perf_counter() - t0
        wait_for_count(handled.count, "all projected")
        t_projected = time.perf_counter() - t0
        meter.mark("projected")
        before = _cpu.children_cpu()
        subprocess.run(
            [PY, "manage.py", "invoices_issue"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
        )
        commands["invoices_issue"] = _cpu.children_cpu() - before
        t_issued = time.perf_counter() - t0
        meter.mark("issued")
        wait_for_count(Payment.objects.count, "all payments created")
        t_paid = time.perf_counter() - t0
        meter.mark("paid")
        # The charges have run at the gateway's pace since the first payment, and the invoicing
        # consumer may have fallen behind their payment.succeeded on the busy cores, the relay behind
        # its invoice.paid: the charge window starts once the first is within two seconds of charges
        # and the second has no event waiting over a second, so that it measures what a charge
        # costs, not the catch-up (which read as 12-16 ms a charge after 100,000, against 7-9 after
        # 10,000).
        lag_at_paid = _succeeded_lag()
        caught_up = True
        try:
            wait_until(
                lambda: _succeeded_lag() < 2 * GATEWAY_RATE and not _relay_behind(),
                600,
                "invoicing and the relay caught up",
                interval=2,
            )
        except TimeoutError:
            caught_up = False  # the window measures the catch-up too: the line below says so
        t_caught_up = time.perf_counter() - t0
        lag_at_window = _succeeded_lag()
        to_charge = Payment.objects.filter(status__in=["pending", "processing"]).count()
        meter.mark("caught up")
        answered = PaymentAttempt.objects.exclude(outcome="not_sent")
        charged_before = answered.count()
        time.sleep(CHARGE_WINDOW)
        charged = answered.count() - charged_before
        meter.mark("charged")
    finally:
        meter.stop()
        for p in reversed(procs):
            _stack.stop(p)

    pub_s, pub_n = window(created, "published_at")
    proj_s, proj_n = window(handled, "processed_at")
    inv_s, inv_n = window(Invoice.objects.all(), "issued_at")
    pay_handled = ProcessedEvent.objects.filter(consumer="payments", event_type="invoice.issued")
    pay_s, pay_n = window(pay_handled, "processed_at")
    rate = lambda n, s: f"{n / s:,.0f}/s"  # noqa: E731
    with connection.cursor() as cur:
        cur.execute("SHOW autovacuum")
        autovacuum = cur.fetchone()[0]
    _env.report(
        [
            ("agreements", f"{N:,}"),
            (
                "PostgreSQL autovacuum",
                autovacuum
                + (
                    " (the server's setting: a run's dead rows stay, and every claim walks them; "
                    "production runs it)"
                    if autovacuum == "off"
                    else ""
                ),
            ),
            (
                "import",
                f"done at {t_import:6.1f} s  {rate(N, t_import)} vs SQL floor {rate(N, floor)}: {floor / t_import:.0%} (the >= 25% target is the import's alone: below, and import_throughput.py); "
                f"the same import with nothing else running, same run: {import_alone:.1f} s, {floor / import_alone:.0%}",
            ),
            (
                "relay",
                f"done at {t_published:6.1f} s  {rate(pub_n, pub_s)} while active vs plain PublishBatch loop {rate(SAMPLE, base_publish)}: {base_publish / SAMPLE * pub_n / pub_s:.0%} (the >= 90% target is the relay's alone: relay_throughput.py); "
                f"vs plain publish and receive+delete at once {rate(SAMPLE, through_invoicing)}: {through_invoicing / SAMPLE * pub_n / pub_s:.0%}",
            ),
            (
                "invoicing consumer",
                f"done at {t_projected:6.1f} s  {rate(proj_n, proj_s)} while active vs plain receive+delete {rate(SAMPLE, base_invoicing)}: {base_invoicing / SAMPLE * proj_n / proj_s:.0%} (the >= 60% target is the consumer's alone: batch_consumers.py); "
                f"vs plain publish and receive+delete at once {rate(SAMPLE, through_invoicing)}: {through_invoicing / SAMPLE * proj_n / proj_s:.0%}",
            ),
            (
                "invoices_issue",
                f"done at {t_issued:6.1f} s  {inv_n:,} invoices in {t_issued - t_projected:.1f} s",
            ),
            (
                "payments consumer",
                f"done at {t_paid:6.1f} s  {rate(pay_n, pay_s)} while active vs plain receive+delete {rate(SAMPLE, base_payments)}: {base_payments / SAMPLE * pay_n / pay_s:.0%} (the >= 60% target is the consumer's alone: batch_consumers.py); "
                f"vs plain publish and receive+delete at once {rate(SAMPLE, through_payments)}: {through_payments / SAMPLE * pay_n / pay_s:.0%}",
            ),
            ("total, file to payments", f"{t_paid:.1f} s (target: 10,000 in <= 20 s, 100,000 in <= 180 s)"),
            ("plain parts in a row", _plain_parts_line(t_paid, floor, through_invoicing, through_payments)),
            (
                "cpu, file to payments",
                _cpu_line(meter.between("start", "paid"), sum(commands.values()), t_paid),
            ),
            *_stage_cpu(meter, commands, [t_import, t_projected, t_issued, t_paid]),
            (
                "charges, then",
                f"{charged / CHARGE_WINDOW:,.0f}/s over the next {CHARGE_WINDOW:.0f} s vs the gateway's "
                f"{GATEWAY_RATE:g}/s: {charged / CHARGE_WINDOW / GATEWAY_RATE:.0%}"
                + (_charge_cpu(meter.between("caught up", "charged"), charged) if charged else ""),
            ),
            (
                "invoicing's lag",
                f"{lag_at_paid:,} payment.succeeded recorded and not yet handled when the payments were "
                f"all created, {lag_at_window:,} {t_caught_up - t_paid:.1f} s later, when the charge window "
                "started"
                + (" (not caught up: the window's CPU includes the catch-up)" if not caught_up else "")
                + (
                    f"; only {to_charge:,} charges were left then, under the window's "
                    f"{CHARGE_WINDOW * GATEWAY_RATE:,.0f}: its rate reads low"
                    if to_charge < CHARGE_WINDOW * GATEWAY_RATE
                    else ""
                ),
            ),
            ("logs", str(tmp)),
        ]
    )


def _plain_parts_line(total: float, floor: float, through_invoicing: float, through_payments: float) -> str:
    """The total next to the same work done by the plain parts of this run, one after the other: the
    file's rows at the SQL floor, then each hop (agreement.created to invoicing, invoice.issued to
    payments) at its plain pair's rate (a plain publisher and a plain receive+delete loop at once,
    SAMPLE messages): no daily run, no charges, no project code. Not a strict floor (the import and
    the first hop overlap in the pipeline), but a machine on which these alone take well over the
    issue's target will not meet it with any code of this design."""
    hops = N * (through_invoicing + through_payments) / SAMPLE
    plain = floor + hops
    line = (
        f"{plain:.1f} s for {N:,} (SQL floor {floor:.1f} s + both hops at the plain pair's rate {hops:.1f} s): "
        f"the total is {total / plain:.2f}x it"
    )
    target = {10_000: 20, 100_000: 180}.get(N)  # the two scales
    if target is None:
        return line
    return f"{line}; the issue's target for {N:,} ({target} s) is {target / plain:.2f}x it on this machine"


def import_with_nothing_else(tmp: Path) -> float:
    """Seconds for ``agreements_import`` of an N-row file before the stack starts (no relay kicked,
    no consumer running): the import's own figure, beside the one inside the running stack, where
    the relay, the consumers and the endpoint share the cores with it. Its rows are then removed."""
    path = tmp / "alone.csv"
    _env.write_agreements_file(path, N, "ALONE")
    return import_file(path, {**os.environ, "OUTBOX_KICK_RELAY": "false"})


def import_file(path: Path, env: dict[str, str]) -> float:
    """Seconds for ``manage.py agreements_import path`` in a process of its own, to its end."""
    started = time.perf_counter()
    subprocess.run(
        [PY, "manage.py", "agreements_import", str(path)],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def _relay_behind() -> bool:
    """An event waits in the outbox more than a second (by the index outbox_unpublished_age): the
    relay is still catching up (the invoicing consumer's invoice.paid, say)."""
    due = OutboxEvent.objects.filter(published_at__isnull=True)
    return due.filter(occurred_at__lt=timezone.now() - timedelta(seconds=1)).exists()


def _succeeded_lag() -> int:
    """payment.succeeded events recorded (published or not: the relay's lag counts too) and not yet
    handled by the invoicing consumer."""
    published = OutboxEvent.objects.filter(type=contracts.PAYMENT_SUCCEEDED)
    handled = ProcessedEvent.objects.filter(consumer="invoicing", event_type=contracts.PAYMENT_SUCCEEDED)
    return published.count() - handled.count()


def wait_for_count(count: Callable[[], int], what: str) -> None:
    """Until ``count()`` reaches N: every 0.5 s while under 95% of it (a count is tens of ms at
    100,000 rows, on the cores measured), then every 0.05 s, so the stage's end is not the poll's
    (polled every 0.5 s, the waits for all projected and all payments created added 0.5 s on
    average to the total)."""
    wait_until(lambda: count() >= N * 0.95, 1800, what, interval=0.5)
    wait_until(lambda: count() >= N, 1800, what, interval=0.05)


def _database_is_here() -> bool:
    return urlsplit(os.environ["DATABASE_URL"]).hostname in ("127.0.0.1", "localhost", "::1", None)


def _database_name() -> str:
    return urlsplit(os.environ["DATABASE_URL"]).path.lstrip("/")


def _charge_cpu(parts: dict[str, float], charged: int) -> str:
    """Each charge's CPU over the window, in all and by part (its payment.succeeded and
    invoice.paid are relayed and payment.succeeded handled by invoicing within it too)."""
    each = {k: 1000 * v / charged for k, v in parts.items()}
    return f", {sum(each.values()):.1f} ms of CPU each: " + ", ".join(f"{k} {v:.1f}" for k, v in each.items())


def _stage_cpu(meter: _cpu.CpuMeter, commands: dict[str, float], ends: list[float]) -> list[tuple[str, str]]:
    """Each stage's CPU (from the end of the one before to its own), in all and by part: which
    stage's work holds the time, and what else runs meanwhile (the relay and the projection during
    the import, payments and charges during the daily run)."""
    stages = [
        ("import", "start", "imported", commands["import"]),
        ("to all projected", "imported", "projected", 0.0),
        ("invoices_issue", "projected", "issued", commands["invoices_issue"]),
        ("to all paid", "issued", "paid", 0.0),
    ]
    rows, began = [], 0.0
    for (name, start, end, command), ended in zip(stages, ends, strict=True):
        parts = meter.between(start, end)
        total = sum(parts.values()) + command
        seconds = max(ended - began, 1e-3)
        by_part = ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
        command_part = f", the command {command:.1f}" if command else ""
        rows.append(
            (
                f"  cpu, {name}",
                f"{seconds:5.1f} s: {total:6.1f} cpu-s, {total / seconds:.2f} cores busy: {by_part}{command_part}",
            )
        )
        began = ended
    return rows


def _cpu_line(parts: dict[str, float], commands: float, seconds: float) -> str:
    """The window's CPU: in all, per agreement, cores busy, and by part (where the 20 s goes)."""
    total = sum(parts.values()) + commands
    by_part = ", ".join(f"{k} {v:.1f}" for k, v in {**parts, "the two commands": commands}.items())
    here = "" if _database_is_here() else " (PostgreSQL not on this machine: not counted)"
    return (
        f"{total:.1f} cpu-s, {1000 * total / N:.2f} ms per agreement, {total / seconds:.2f} of "
        f"{_cpu.cores()} cores busy: {by_part}{here}"
    )


if __name__ == "__main__":
    main()
