"""The daily run: which periods are billed, catch-up, idempotency, concurrency."""

from __future__ import annotations

import threading
from datetime import date, timedelta

import pytest
from django.db import connection

from events.models import OutboxEvent
from invoicing.models import BillableAgreement, DailyRun, Invoice
from invoicing.services import invoices_run_inline, projection_apply

from .factories import agreement_event

pytestmark = pytest.mark.django_db(transaction=True)


def make(agreement_id: str = "A", **created: object) -> BillableAgreement:
    return projection_apply(event=agreement_event("agreement.created", agreement_id, 1, **created))


def periods(agreement_id: str = "A") -> list[tuple[str, str, int]]:
    return [
        (i.period_start.isoformat(), i.period_end.isoformat(), i.total_minor)
        for i in Invoice.objects.filter(agreement_id=agreement_id).order_by("period_start")
    ]


def run(day: str) -> int:
    return invoices_run_inline(run_date=date.fromisoformat(day)).issued


def test_month_end_anchor_and_leap_year():
    make(start_date="2024-01-31")
    run("2024-04-30")
    assert periods() == [
        ("2024-01-31", "2024-02-29", 1000),
        ("2024-02-29", "2024-03-31", 1000),
        ("2024-03-31", "2024-04-30", 1000),
        ("2024-04-30", "2024-05-31", 1000),
    ]


def test_yearly_from_leap_day():
    make(start_date="2024-02-29", interval="year")
    run("2025-03-01")
    assert [p[:2] for p in periods()] == [("2024-02-29", "2025-02-28"), ("2025-02-28", "2026-02-28")]


def test_weekly_and_every_three_months():
    make("W", start_date="2026-01-05", interval="week")
    make("Q", start_date="2026-01-15", interval="month", interval_count=3)
    run("2026-01-26")
    assert [p[0] for p in periods("W")] == ["2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26"]
    assert [p[:2] for p in periods("Q")] == [("2026-01-15", "2026-04-15")]
    run("2026-04-15")
    assert [p[0] for p in periods("Q")] == ["2026-01-15", "2026-04-15"]


def test_start_in_the_future_bills_nothing_until_it_starts():
    make(start_date="2026-03-01")
    assert run("2026-02-28") == 0
    assert run("2026-03-01") == 1


def test_end_date_mid_period_bills_the_last_period_up_to_the_end():
    make(start_date="2026-01-01", end_date="2026-02-15")
    run("2026-06-01")
    assert periods() == [("2026-01-01", "2026-02-01", 1000), ("2026-02-01", "2026-02-15", 1000)]
    assert BillableAgreement.objects.get().next_period_start is None  # nothing more, ever


def test_catch_up_of_three_missed_days_issues_exactly_the_missed_periods_once():
    make(start_date="2026-03-01", interval="day")
    run("2026-03-02")  # then the system is down on the 3rd, 4th and 5th
    assert len(periods()) == 2
    run("2026-03-05")
    assert [p[0] for p in periods()] == ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"]
    run("2026-03-05")  # a second run the same day changes nothing
    assert len(periods()) == 5
    assert OutboxEvent.objects.filter(type="invoice.issued").count() == 5


def test_too_many_missed_periods_flag_the_agreement_instead_of_billing(settings):
    settings.INVOICING_MAX_CATCHUP_PERIODS = 3
    make(start_date="2026-03-01", interval="day")
    summary = invoices_run_inline(run_date=date(2026, 3, 10))
    assert summary.issued == 0 and summary.flagged == 1
    row = BillableAgreement.objects.get()
    assert "more than 3 periods due" in row.flagged_reason
    # an operator approves: the next run bills them all
    BillableAgreement.objects.update(catchup_approved=True)
    assert run("2026-03-10") == 10
    row.refresh_from_db()
    assert row.flagged_reason == "" and not row.catchup_approved


def test_price_change_pause_and_cancel_shape_the_invoices():
    make(start_date="2026-01-01")
    projection_apply(
        event=agreement_event(
            "agreement.price_changed", "A", 2, amount_minor=2000, currency="EUR", effective_from="2026-03-01"
        )
    )
    projection_apply(event=agreement_event("agreement.paused", "A", 3, paused_from="2026-04-01"))
    projection_apply(event=agreement_event("agreement.resumed", "A", 4, resumed_from="2026-05-10"))
    projection_apply(
        event=agreement_event("agreement.cancelled", "A", 5, effective_date="2026-08-01", at_period_end=True)
    )
    run("2026-12-31")
    assert [(p[0], p[2]) for p in periods()] == [
        ("2026-01-01", 1000),
        ("2026-02-01", 1000),
        ("2026-03-01", 2000),
        # April and May started while paused (resumed from May 10): not billed
        ("2026-06-01", 2000),
        ("2026-07-01", 2000),
    ]


def test_invoice_numbers_are_sequential_and_gap_free():
    for i in range(5):
        make(f"N{i}", start_date="2026-01-01")
    run("2026-03-01")
    numbers = sorted(Invoice.objects.values_list("sequence", flat=True))
    assert numbers == list(range(1, 16))
    assert Invoice.objects.filter(number="INV-2026-0000001").exists()


@pytest.mark.slow
def test_two_daily_runs_at_once_issue_each_invoice_once(settings):
    settings.INVOICING_CHUNK_SIZE = 7
    for i in range(60):
        make(f"C{i}", start_date="2026-01-01", interval="week")
    barrier = threading.Barrier(2)
    results = []

    def go() -> None:
        barrier.wait()
        try:
            results.append(invoices_run_inline(run_date=date(2026, 2, 1)).issued)
        finally:
            connection.close()

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 60 * 5  # Jan 1, 8, 15, 22, 29
    assert Invoice.objects.count() == 300
    assert OutboxEvent.objects.filter(type="invoice.issued").count() == 300
    assert DailyRun.objects.count() == 2


def test_a_run_records_its_chunks_and_finishes_when_the_last_one_ends(settings):
    settings.INVOICING_CHUNK_SIZE = 2
    for i in range(5):
        make(f"K{i}", start_date="2026-01-01")
    summary = invoices_run_inline(run_date=date(2026, 1, 1))
    run = DailyRun.objects.get()
    assert (summary.issued, run.status, run.chunks_total, run.chunks_done, run.chunks_failed) == (
        5,
        "finished",
        3,
        3,
        0,
    )
    assert list(run.chunks.values_list("status", "issued")) == [("done", 2), ("done", 2), ("done", 1)]


def test_the_watchdog_resends_a_chunk_whose_worker_died_and_gives_up_after_its_attempts(settings):
    from invoicing.services import daily_run_start, daily_run_watchdog
    from invoicing.services.daily_run import chunk_claim

    settings.INVOICING_CHUNK_STALE_SECONDS = 0
    settings.INVOICING_CHUNK_MAX_ATTEMPTS = 2
    make("W", start_date="2026-01-01")
    run, [chunk] = daily_run_start(run_date=date(2026, 1, 1))
    # a chunk that was never sent (its fan-out died) is sent
    report = daily_run_watchdog()
    assert [k["chunk_id"] for k in report.resend] == [chunk.pk]
    # a chunk taken by a worker that died, twice: sent again, then given up on (the run fails)
    assert chunk_claim(chunk.pk)
    assert len(daily_run_watchdog().resend) == 1
    assert chunk_claim(chunk.pk)
    report = daily_run_watchdog()
    assert report.resend == [] and report.failed == 1
    run.refresh_from_db()
    assert run.status == "failed" and "gave up after 2 attempts" in run.last_error
    assert OutboxEvent.objects.filter(type="alert.daily_run_failed").count() == 1


def test_a_run_stuck_running_raises_an_alert_and_resolves_when_it_ends(settings, empty_queues):
    from django.utils import timezone

    from events.operations.alerts import monitor_run
    from invoicing.services import daily_run_start

    settings.MONITOR_DAILY_RUN_MAX_RUNNING_SECONDS = 60
    make("S", start_date="2026-01-01")
    run, [chunk] = daily_run_start(run_date=date(2026, 1, 1))
    DailyRun.objects.filter(pk=run.pk).update(started_at=timezone.now() - timedelta(hours=2))
    assert "alert.daily_run_stuck" in monitor_run()
    summary = OutboxEvent.objects.get(type="alert.daily_run_stuck").data["summary"]
    assert "daily run for 2026-01-01 still running" in summary
    # the operator's command reads the same health model: it breaches too
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError) as exc:
        call_command("messaging_status", "--no-age")
    assert exc.value.returncode == 2
    from invoicing.services import chunk_execute

    chunk_execute(chunk_id=chunk.pk)
    assert "alert.resolved:daily_run_stuck" in monitor_run()


def test_the_watchdog_leaves_the_chunks_of_an_inline_run_to_it(settings, monkeypatch):
    """An operator's `invoices_issue` drives its own chunks; the watchdog (beat) must not send them
    to workers meanwhile (the command would then report fewer invoices than it issued)."""
    from invoicing.services import daily_run_watchdog
    from invoicing.services import runner as runner_module

    settings.INVOICING_CHUNK_SIZE = 1
    settings.INVOICING_CHUNK_STALE_SECONDS = 0
    for i in range(3):
        make(f"I{i}", start_date="2026-01-01")
    resent: list[int] = []
    real_execute = runner_module.chunk_execute

    def execute_then_watch(*, chunk_id: int):  # the watchdog runs between the command's chunks
        resent.extend(k["chunk_id"] for k in daily_run_watchdog().resend)
        return real_execute(chunk_id=chunk_id)

    monkeypatch.setattr(runner_module, "chunk_execute", execute_then_watch)
    summary = invoices_run_inline(run_date=date(2026, 1, 1))
    assert resent == [] and summary.issued == 3
