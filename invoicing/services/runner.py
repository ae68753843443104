"""Driving daily runs: in this process (the operators' command), and the watchdog that keeps
task-driven runs going when a worker dies, a connection drops or a message is lost.

The watchdog is safe to run at any time, concurrently with chunks and with itself: it only
touches chunk rows it can lock without waiting (``SKIP LOCKED``), and a chunk at work holds
its row locked for its whole transaction. So a ``running`` chunk it can lock has lost its
worker, and sending it again is safe (chunks are idempotent).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..models import BillableAgreement, DailyRun, DailyRunChunk
from .daily_run import (
    chunk_execute,
    chunk_fail,
    chunk_ranges,
    daily_run_finish,
    daily_run_start,
    invoices_issue_chunk,
)


@dataclass
class RunSummary:
    run_date: date
    chunks: int = 0
    issued: int = 0
    flagged: int = 0
    failed_chunks: int = 0
    totals: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def invoices_run_inline(
    *, run_date: date, dry_run: bool = False, progress: Any = None, summary: RunSummary | None = None
) -> RunSummary:
    """The daily run in this process, chunk after chunk (operators' command and the preview).

    A chunk that fails is recorded as failed (the run then ends ``failed`` with an alert) and
    the others still run; the summary lists the errors. ``progress(1)`` is called after each
    chunk; ``summary``, when given, is the one filled in chunk by chunk (so a caller stopped
    midway, by Ctrl-C, can say what was done). Interrupted, the run's chunks not done are left
    to the watchdog (``daily_run_watchdog``), which sends them to the workers; running it again
    at once is as safe, since chunks are idempotent.
    """
    if summary is None:
        summary = RunSummary(run_date=run_date)
    if dry_run:
        for pk_from, pk_to in chunk_ranges(run_date):
            _add(summary, invoices_issue_chunk(run_date=run_date, pk_from=pk_from, pk_to=pk_to, dry_run=True))
            if progress:
                progress(1)
        return summary
    _run, chunks = daily_run_start(run_date=run_date)
    # taken by this process: the watchdog resends them only if it dies (after the broker's timeout)
    chunks_mark_enqueued([c.pk for c in chunks])
    for chunk in chunks:
        try:
            _add(summary, chunk_execute(chunk_id=chunk.pk))
        except Exception as exc:  # noqa: BLE001 - recorded on the run; the other chunks go on
            error = f"{type(exc).__name__}: {exc}"
            chunk_fail(chunk_id=chunk.pk, error=error)
            summary.failed_chunks += 1
            summary.errors.append(f"chunk {chunk.pk_from}-{chunk.pk_to}: {error}")
        if progress:
            progress(1)
    return summary


def _add(summary: RunSummary, result: Any) -> None:
    summary.chunks += 1
    summary.issued += result.issued
    summary.flagged += result.flagged
    summary.totals.update(result.totals)


def flagged_agreements() -> list[BillableAgreement]:
    """Agreements waiting for an operator: a catch-up to approve, or an old correction."""
    return list(
        BillableAgreement.objects.filter(~Q(flagged_reason="") | ~Q(correction_flag="")).order_by(
            "agreement_id"
        )
    )


def catchup_approve(*, agreement_ids: list[str]) -> int:
    """An operator approves the catch-up of flagged agreements: the next run bills every period
    due, however many (the approval is used up then). The flag is cleared now, since nothing
    waits for an operator any more: the preview and the admin stop showing the old reason. A run
    that still cannot bill the agreement flags it again, with its new reason. Returns how many
    agreements were approved."""
    return BillableAgreement.objects.filter(agreement_id__in=agreement_ids).update(
        catchup_approved=True, flagged_reason="", updated_at=timezone.now()
    )


@dataclass
class WatchdogReport:
    resend: list[dict[str, Any]] = field(default_factory=list)  # issue_invoice_chunk kwargs
    failed: int = 0
    finished: int = 0


def daily_run_watchdog(*, now: datetime | None = None) -> WatchdogReport:
    """Find chunks to send again (worker died, fan-out died before sending, message lost), give up
    on chunks past INVOICING_CHUNK_MAX_ATTEMPTS, and finish runs whose chunks have all ended.
    The caller sends ``report.resend``."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.INVOICING_CHUNK_STALE_SECONDS)
    lost = now - timedelta(seconds=settings.CELERY_VISIBILITY_TIMEOUT)
    report = WatchdogReport()
    give_up: list[DailyRunChunk] = []
    with transaction.atomic():
        candidates = (
            DailyRunChunk.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("run")
            .filter(
                Q(status=DailyRunChunk.Status.RUNNING, started_at__lt=stale)
                | Q(status=DailyRunChunk.Status.PENDING, enqueued_at__isnull=True, run__started_at__lt=stale)
                | Q(status=DailyRunChunk.Status.PENDING, enqueued_at__lt=lost)
            )
            .order_by("pk")[:500]
        )
        for chunk in candidates:
            if chunk.attempts >= settings.INVOICING_CHUNK_MAX_ATTEMPTS:
                give_up.append(chunk)
                continue
            chunk.status, chunk.started_at, chunk.enqueued_at = DailyRunChunk.Status.PENDING, None, now
            chunk.save(update_fields=["status", "started_at", "enqueued_at"])
            report.resend.append(chunk_task_kwargs(chunk))
    for chunk in give_up:
        chunk_fail(
            chunk_id=chunk.pk,
            error=f"gave up after {chunk.attempts} attempts: {chunk.error or 'worker lost'}",
        )
        report.failed += 1
    for run_id in DailyRun.objects.filter(status=DailyRun.Status.RUNNING).values_list("pk", flat=True):
        with transaction.atomic():
            run = DailyRun.objects.select_for_update().get(pk=run_id)
            if (
                run.status == DailyRun.Status.RUNNING
                and run.chunks_done + run.chunks_failed >= run.chunks_total
            ):
                daily_run_finish(run=run)
                report.finished += 1
    return report


def chunk_task_kwargs(chunk: DailyRunChunk) -> dict[str, Any]:
    return {
        "run_id": chunk.run_id,
        "run_date": chunk.run.run_date.isoformat(),
        "pk_from": chunk.pk_from,
        "pk_to": chunk.pk_to,
        "chunk_id": chunk.pk,
    }


def chunks_mark_enqueued(chunk_ids: list[int]) -> None:
    DailyRunChunk.objects.filter(pk__in=chunk_ids, enqueued_at__isnull=True).update(
        enqueued_at=timezone.now()
    )
