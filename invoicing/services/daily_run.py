"""The daily run: every due period of every agreement, in chunks, one transaction per chunk.

A run cuts the due agreements into pk ranges (``DailyRunChunk`` rows, written with the run) and
each chunk is handled by one task. A chunk locks its agreements (FOR UPDATE, pk order), issues
every period due (catch-up included), moves their cursors and records its events, in one
transaction; re-running a chunk issues nothing twice. A chunk whose bulk insert fails on one
agreement's data isolates it (savepoints), flags it with the reason and issues the others.

The run always ends: the last chunk to end finishes it (``finished``, or ``failed`` with an
alert if a chunk failed for good), and the watchdog resends chunks whose worker died.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from types import SimpleNamespace

import orjson
from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from psycopg2.extras import execute_values

from events.operations import metrics
from events.operations.alerts import record_alert
from events.operations.health import heartbeat_record
from events.publishing import recording_now

from ..models import BillableAgreement, DailyRun, DailyRunChunk
from .billing import AgreementPlan, plan_agreement
from .issuing import InvoiceDraft, issue_drafts, line_text

logger = logging.getLogger(__name__)
_JSON_COLUMNS = ("customer", "prices", "toggles", "cancellations")


@dataclass
class ChunkResult:
    issued: int = 0
    flagged: int = 0
    failed: int = 0  # agreements isolated because their invoices could not be written
    totals: Counter[str] = field(default_factory=Counter)


def due_agreements(run_date: date):  # type: ignore[no-untyped-def]
    return BillableAgreement.objects.filter(created_seen=True, next_period_start__lte=run_date)


def chunk_ranges(run_date: date, size: int | None = None) -> Iterator[tuple[int, int]]:
    """(first pk, last pk) of consecutive due agreements, ``size`` at a time. Streams."""
    size = size or settings.INVOICING_CHUNK_SIZE
    first = last = None
    n = 0
    for pk in (
        due_agreements(run_date).order_by("pk").values_list("pk", flat=True).iterator(chunk_size=10_000)
    ):
        if first is None:
            first = pk
        last = pk
        n += 1
        if n == size:
            yield first, last
            first, n = None, 0
    if first is not None and last is not None:
        yield first, last


def _plan_rows(run_date: date, pk_from: int, pk_to: int, *, lock: bool) -> list[SimpleNamespace]:
    """The chunk's due agreements as plain namespaces (one raw query, JSON decoded with orjson):
    at 1,000 rows per chunk, ORM model instances and json.loads cost more than the query."""
    columns = (
        "id", "agreement_id", "customer", "description", "currency", "interval", "interval_count",
        "start_date", "end_date", "prices", "toggles", "cancellations", "next_period_index",
        "next_period_start", "catchup_approved",
    )  # fmt: skip
    select = ", ".join(f"{c}::text" if c in _JSON_COLUMNS else c for c in columns)
    sql = f"""
        SELECT {select}
          FROM {BillableAgreement._meta.db_table}
         WHERE created_seen AND next_period_start <= %s AND id BETWEEN %s AND %s
         ORDER BY id
        {"FOR UPDATE" if lock else ""}
    """
    with connection.cursor() as cur:
        cur.execute(sql, [run_date, pk_from, pk_to])
        fetched = cur.fetchall()
    rows = []
    for values in fetched:
        row = dict(zip(columns, values, strict=True))
        for c in _JSON_COLUMNS:
            row[c] = orjson.loads(row[c])
        row["pk"] = row.pop("id")
        rows.append(SimpleNamespace(**row))
    return rows


def _plan(row: SimpleNamespace, run_date: date) -> AgreementPlan:
    try:
        return plan_agreement(row, run_date, settings.INVOICING_MAX_CATCHUP_PERIODS)
    except Exception as exc:  # noqa: BLE001 - one agreement's bad data must not stop its chunk
        logger.exception("agreement %s could not be planned on %s", row.agreement_id, run_date)
        reason = f"could not be invoiced on {run_date}: {type(exc).__name__}: {exc}"
        return AgreementPlan(row, [], row.next_period_index, row.next_period_start, flagged=reason[:300])


def _drafts(plan: AgreementPlan) -> list[InvoiceDraft]:
    row = plan.row
    return [
        InvoiceDraft(
            agreement_id=row.agreement_id,
            customer=row.customer,
            currency=row.currency,
            period_start=p.start,
            period_end=p.end,
            amount_minor=p.amount_minor,
            line=line_text(row.description, p.start, p.end),
        )
        for p in plan.periods
    ]


@transaction.atomic
def invoices_issue_chunk(*, run_date: date, pk_from: int, pk_to: int, dry_run: bool = False) -> ChunkResult:
    """Issue every due invoice of the agreements with pk in [pk_from, pk_to]. Idempotent.

    Rows are locked with FOR UPDATE in pk order: a concurrent run (or an agreement event being
    projected) makes this one wait, and PostgreSQL re-checks the due condition on the row it then
    gets, so a cursor moved by the other run drops the row; the unique (agreement, period start,
    revision) constraint is the last guard. Invoices, lines, their ``invoice.issued`` events and
    the cursor moves commit together.
    """
    result = ChunkResult()
    plans = [_plan(r, run_date) for r in _plan_rows(run_date, pk_from, pk_to, lock=not dry_run)]
    for plan in plans:
        for period in plan.periods:
            result.totals[plan.row.currency] += period.amount_minor
    result.flagged = sum(1 for p in plans if p.flagged)
    if dry_run:
        result.issued = sum(len(p.periods) for p in plans)
        return result
    now = recording_now()  # the invoices' issued_at and their events' occurred_at
    try:
        with transaction.atomic():
            ids = issue_drafts([d for p in plans for d in _drafts(p)], issue_date=run_date, now=now)
        result.issued = len(ids)
    except (IntegrityError, DataError) as exc:
        logger.warning(
            "chunk %s-%s: bulk insert failed (%s); issuing agreement by agreement", pk_from, pk_to, exc
        )
        result.issued = 0
        for plan in plans:
            if not plan.periods:
                continue
            try:
                with transaction.atomic():
                    result.issued += len(issue_drafts(_drafts(plan), issue_date=run_date, now=now))
            except (IntegrityError, DataError) as row_exc:
                logger.error("agreement %s isolated: %s", plan.row.agreement_id, row_exc)
                reason = f"could not be invoiced on {run_date}: {type(row_exc).__name__}: {row_exc}"
                plan.periods, plan.flagged = [], reason[:300]
                plan.next_index, plan.next_start = plan.row.next_period_index, plan.row.next_period_start
                result.failed += 1
        result.flagged = sum(1 for p in plans if p.flagged)
    _move_cursors(plans)
    return result


def _move_cursors(plans: list[AgreementPlan]) -> None:
    # An approved catch-up is used up once billed; a flagged agreement stays where it was.
    values = [(p.row.pk, p.next_index, p.next_start, p.flagged, False) for p in plans]
    if not values:
        return
    with connection.cursor() as cur:
        execute_values(
            cur,
            f"""
            UPDATE {BillableAgreement._meta.db_table} AS b
               SET next_period_index = v.idx, next_period_start = v.start::date,
                   flagged_reason = v.flag, catchup_approved = v.approved, updated_at = now()
              FROM (VALUES %s) AS v(id, idx, start, flag, approved)
             WHERE b.id = v.id
            """,
            values,
            page_size=2000,
        )


# ---------------------------------------------------------------------------
# A run and its chunks
# ---------------------------------------------------------------------------
@transaction.atomic
def daily_run_start(*, run_date: date) -> tuple[DailyRun, list[DailyRunChunk]]:
    """Record a run and its chunks (the caller dispatches them). A run with nothing due is finished."""
    ranges = list(chunk_ranges(run_date))
    run = DailyRun.objects.create(run_date=run_date, chunks_total=len(ranges))
    chunks = DailyRunChunk.objects.bulk_create(DailyRunChunk(run=run, pk_from=a, pk_to=b) for a, b in ranges)
    if not ranges:
        daily_run_finish(run=run)
    return run, chunks


def chunk_claim(chunk_id: int) -> bool:
    """Mark the chunk running (committed at once, outside the chunk's transaction). False if it
    has ended already: a duplicate message, or a resend after it finished."""
    with connection.cursor() as cur:
        cur.execute(
            f"UPDATE {DailyRunChunk._meta.db_table}"
            " SET status = %s, attempts = attempts + 1, started_at = now()"
            " WHERE id = %s AND status IN (%s, %s)",
            [
                DailyRunChunk.Status.RUNNING,
                chunk_id,
                DailyRunChunk.Status.PENDING,
                DailyRunChunk.Status.RUNNING,
            ],
        )
        return cur.rowcount == 1


def chunk_execute(*, chunk_id: int) -> ChunkResult:
    """Run one chunk of a run, with its bookkeeping, in one transaction. Idempotent.

    The chunk's row is locked for the whole transaction: that lock is how the watchdog tells a
    chunk at work from one whose worker died.
    """
    if not chunk_claim(chunk_id):
        return ChunkResult()
    with transaction.atomic():
        chunk = DailyRunChunk.objects.select_for_update().select_related("run").get(pk=chunk_id)
        if chunk.status != DailyRunChunk.Status.RUNNING:
            return ChunkResult()  # ended by another delivery while this one waited
        result = invoices_issue_chunk(run_date=chunk.run.run_date, pk_from=chunk.pk_from, pk_to=chunk.pk_to)
        chunk.status, chunk.finished_at, chunk.issued = (
            DailyRunChunk.Status.DONE,
            timezone.now(),
            result.issued,
        )
        chunk.save(update_fields=["status", "finished_at", "issued"])
        _count(chunk.run_id, done=1, issued=result.issued, flagged=result.flagged)
    return result


@transaction.atomic
def chunk_fail(*, chunk_id: int, error: str) -> None:
    """The chunk failed for good: record why; the run ends ``failed`` once every chunk has ended."""
    chunk = DailyRunChunk.objects.select_for_update().get(pk=chunk_id)
    if chunk.status in (DailyRunChunk.Status.DONE, DailyRunChunk.Status.FAILED):
        return
    chunk.status, chunk.finished_at, chunk.error = DailyRunChunk.Status.FAILED, timezone.now(), error[:2000]
    chunk.save(update_fields=["status", "finished_at", "error"])
    DailyRun.objects.filter(pk=chunk.run_id).update(
        last_error=f"chunk {chunk.pk_from}-{chunk.pk_to}: {error}"[:2000]
    )
    _count(chunk.run_id, failed=1)
    logger.error(
        "daily run %s: chunk %s-%s failed for good: %s", chunk.run_id, chunk.pk_from, chunk.pk_to, error
    )


def _count(run_id: int, *, done: int = 0, failed: int = 0, issued: int = 0, flagged: int = 0) -> None:
    DailyRun.objects.filter(pk=run_id).update(
        chunks_done=F("chunks_done") + done,
        chunks_failed=F("chunks_failed") + failed,
        invoices_issued=F("invoices_issued") + issued,
        agreements_flagged=F("agreements_flagged") + flagged,
    )
    run = DailyRun.objects.select_for_update().get(pk=run_id)
    if run.status == DailyRun.Status.RUNNING and run.chunks_done + run.chunks_failed >= run.chunks_total:
        daily_run_finish(run=run)


def daily_run_finish(*, run: DailyRun) -> None:
    """End a run whose chunks have all ended: finished, or failed with an alert."""
    failed = run.chunks_failed > 0
    run.status = DailyRun.Status.FAILED if failed else DailyRun.Status.FINISHED
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "finished_at"])
    if failed:
        record_alert(
            sender=DailyRun,
            check="daily_run_failed",
            about=str(run.pk),
            severity="critical",
            summary=(
                f"Daily run for {run.run_date} failed: {run.chunks_failed} of {run.chunks_total} "
                f"chunk(s) failed for good; their agreements are not invoiced. Fix the cause, then run "
                f"`invoices_issue --date {run.run_date}` (idempotent). Last error: {run.last_error[:300]}"
            ),
            details={"run_id": run.pk, "run_date": run.run_date.isoformat()},
        )
        return
    heartbeat_record(
        name="daily_run",
        detail={
            "run_date": run.run_date.isoformat(),
            "invoices_issued": run.invoices_issued,
            "agreements_flagged": run.agreements_flagged,
            "duration_seconds": run.duration_seconds,
        },
    )
    duration = run.duration_seconds
    transaction.on_commit(lambda: _observe(duration))


def _observe(duration: float | None) -> None:
    metrics.DAILY_RUN_LAST_SUCCESS.set(timezone.now().timestamp())
    if duration is not None:
        metrics.DAILY_RUN_DURATION.observe(duration)
