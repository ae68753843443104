"""Use cases of the invoicing context: the agreement projection, the daily run, invoice state."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from psycopg2.extras import execute_values

from billing_project.periods import period_start
from events import contracts, metrics
from events.bulk import copy_rows
from events.consumers import Event
from events.outbox import NewEvent, record_change, record_events

from .models import BillableAgreement, DailyRun, Invoice, InvoiceLine, InvoiceSeries, PendingPaymentOutcome

logger = logging.getLogger(__name__)


def billing_today() -> date:
    return timezone.now().astimezone(ZoneInfo(settings.BILLING_TIME_ZONE)).date()


# ---------------------------------------------------------------------------
# The projection of agreements (order-insensitive, idempotent)
# ---------------------------------------------------------------------------
def _with_entry(entries: list[list[Any]], entry: list[Any], key_index: int, sort: Any) -> list[list[Any]]:
    """Add ``entry`` unless one with the same version (at ``key_index``) is there; keep canonical order."""
    if any(e[key_index] == entry[key_index] for e in entries):
        return entries
    return sorted([*entries, entry], key=sort)


@transaction.atomic
def projection_apply(*, event: Event) -> BillableAgreement:
    """Fold one agreement event into the projection.

    Order-insensitive and idempotent: each event's contribution is stored under
    its aggregate_version, so any order and any duplicates give the same row.
    A cancel (or price change, pause...) arriving before ``agreement.created``
    is kept and applies once the agreement is known.
    """
    data = event.data
    agreement_id = data["agreement_id"]
    row, _ = BillableAgreement.objects.select_for_update().get_or_create(agreement_id=agreement_id)
    v = event.aggregate_version
    if event.type == contracts.AGREEMENT_CREATED:
        if not row.created_seen:
            row.created_seen = True
            row.customer = data["customer"]
            row.description = data["description"]
            row.currency = data["currency"]
            row.interval = data["interval"]
            row.interval_count = data["interval_count"]
            row.start_date = date.fromisoformat(data["start_date"])
            row.end_date = date.fromisoformat(data["end_date"]) if data["end_date"] else None
            row.next_period_index = 0
            row.next_period_start = row.start_date
        row.prices = _with_entry(row.prices, [data["start_date"], data["amount_minor"], v], 2, _price_order)
    elif event.type == contracts.AGREEMENT_PRICE_CHANGED:
        row.prices = _with_entry(
            row.prices, [data["effective_from"], data["amount_minor"], v], 2, _price_order
        )
    elif event.type == contracts.AGREEMENT_PAUSED:
        row.toggles = _with_entry(row.toggles, [v, "pause", data["paused_from"]], 0, lambda e: e[0])
    elif event.type == contracts.AGREEMENT_RESUMED:
        row.toggles = _with_entry(row.toggles, [v, "resume", data["resumed_from"]], 0, lambda e: e[0])
    elif event.type == contracts.AGREEMENT_CANCELLED:
        row.cancellations = _with_entry(row.cancellations, [v, data["effective_date"]], 0, lambda e: e[0])
    else:
        raise ValueError(f"not an agreement event: {event.type}")
    row.last_version = max(row.last_version, v)
    row.save()
    return row


def _price_order(e: list[Any]) -> tuple[str, int]:
    return (e[0], e[2])


# ---------------------------------------------------------------------------
# Which periods are billable
# ---------------------------------------------------------------------------
STOP = "stop"


@dataclass(frozen=True)
class Period:
    index: int
    start: date
    end: date
    amount_minor: int


def evaluate_period(p: BillableAgreement, k: int) -> Period | str | None:
    """Period ``k`` of ``p``: a billable Period, None (skipped: paused) or STOP (no more periods)."""
    assert p.start_date is not None
    start = period_start(p.start_date, p.interval, p.interval_count, k)
    if p.end_date is not None and start >= p.end_date:
        return STOP
    if p.cancellations:
        effective = date.fromisoformat(p.cancellations[-1][1])  # the latest version wins
        if start >= effective:
            return STOP
    iso = start.isoformat()
    state = "resume"
    for _version, kind, when in p.toggles:  # sorted by version: the last one in force wins
        if when <= iso:
            state = kind
    if state == "pause":
        return None
    amount = None
    for effective_from, amount_minor, _version in p.prices:  # sorted by (effective_from, version)
        if effective_from <= iso:
            amount = amount_minor
    if amount is None:
        return None
    end = period_start(p.start_date, p.interval, p.interval_count, k + 1)
    if p.end_date is not None and p.end_date < end:
        end = p.end_date
    return Period(k, start, end, amount)


@dataclass
class AgreementPlan:
    row: BillableAgreement
    periods: list[Period]
    next_index: int
    next_start: date | None
    flagged: str = ""


def plan_agreement(p: BillableAgreement, run_date: date, max_periods: int) -> AgreementPlan:
    """The periods due on ``run_date`` (catch-up included) and where the cursor moves."""
    periods: list[Period] = []
    k = p.next_period_index
    while True:
        result = evaluate_period(p, k)
        if result == STOP:
            return AgreementPlan(p, periods, k, None)
        start = period_start(p.start_date, p.interval, p.interval_count, k)  # type: ignore[arg-type]
        if start > run_date:
            return AgreementPlan(p, periods, k, start)
        if isinstance(result, Period):
            periods.append(result)
            if len(periods) > max_periods and not p.catchup_approved:
                return AgreementPlan(
                    p,
                    [],
                    p.next_period_index,
                    p.next_period_start,
                    flagged=f"more than {max_periods} periods due on {run_date} (catch-up needs approval)",
                )
        k += 1


# ---------------------------------------------------------------------------
# The daily run
# ---------------------------------------------------------------------------
@dataclass
class ChunkResult:
    issued: int = 0
    flagged: int = 0
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


def daily_run_start(*, run_date: date) -> tuple[DailyRun, list[tuple[int, int]]]:
    """Record a run and cut the due agreements into chunks (the caller dispatches them)."""
    ranges = list(chunk_ranges(run_date))
    run = DailyRun.objects.create(run_date=run_date, chunks_total=len(ranges))
    if not ranges:
        daily_run_finish(run=run)
    return run, ranges


def daily_run_finish(*, run: DailyRun) -> None:
    from events.services import heartbeat_record

    DailyRun.objects.filter(pk=run.pk, finished_at__isnull=True).update(finished_at=timezone.now())
    run.refresh_from_db()
    heartbeat_record(
        name="daily_run",
        detail={
            "run_date": run.run_date.isoformat(),
            "invoices_issued": run.invoices_issued,
            "agreements_flagged": run.agreements_flagged,
            "duration_seconds": run.duration_seconds,
        },
    )
    metrics.DAILY_RUN_LAST_SUCCESS.set(run.finished_at.timestamp())  # type: ignore[union-attr]
    if run.duration_seconds is not None:
        metrics.DAILY_RUN_DURATION.observe(run.duration_seconds)


def _plan_rows(run_date: date, pk_from: int, pk_to: int, *, lock: bool) -> list[SimpleNamespace]:
    """The chunk's due agreements as plain namespaces (one raw query, JSON decoded with orjson):
    at 1,000 rows per chunk, ORM model instances and json.loads cost more than the query."""
    sql = f"""
        SELECT id, agreement_id, customer::text, description, currency, interval, interval_count, start_date,
               end_date, prices::text, toggles::text, cancellations::text, next_period_index,
               next_period_start, catchup_approved
          FROM {BillableAgreement._meta.db_table}
         WHERE created_seen AND next_period_start <= %s AND id BETWEEN %s AND %s
         ORDER BY id
        {"FOR UPDATE" if lock else ""}
    """
    with connection.cursor() as cur:
        cur.execute(sql, [run_date, pk_from, pk_to])
        fetched = cur.fetchall()
    loads = orjson.loads
    return [
        SimpleNamespace(
            pk=r[0],
            agreement_id=r[1],
            customer=loads(r[2]),
            description=r[3],
            currency=r[4],
            interval=r[5],
            interval_count=r[6],
            start_date=r[7],
            end_date=r[8],
            prices=loads(r[9]),
            toggles=loads(r[10]),
            cancellations=loads(r[11]),
            next_period_index=r[12],
            next_period_start=r[13],
            catchup_approved=r[14],
        )
        for r in fetched
    ]


@transaction.atomic
def invoices_issue_chunk(
    *, run_date: date, pk_from: int, pk_to: int, run_id: int | None = None, dry_run: bool = False
) -> ChunkResult:
    """Issue every due invoice of the agreements with pk in [pk_from, pk_to]. Idempotent.

    Rows are locked with FOR UPDATE in pk order: a concurrent run (or an agreement
    event being projected) makes this one wait, and PostgreSQL re-checks the due
    condition on the row it then gets, so a cursor moved by the other run drops the
    row; the unique (agreement, period start) constraint is the last guard. Invoices, lines,
    their ``invoice.issued`` events and the cursor move commit together.
    """
    result = ChunkResult()
    rows = _plan_rows(run_date, pk_from, pk_to, lock=not dry_run)
    plans = [plan_agreement(r, run_date, settings.INVOICING_MAX_CATCHUP_PERIODS) for r in rows]
    result.flagged = sum(1 for p in plans if p.flagged)
    count = sum(len(p.periods) for p in plans)
    for plan in plans:
        for period in plan.periods:
            result.totals[plan.row.currency] += period.amount_minor
    result.issued = count
    if dry_run:
        return result
    series = settings.INVOICE_SERIES_FORMAT.format(year=run_date.year)
    now = timezone.now()
    now_iso = now.isoformat()
    due = (run_date + timedelta(days=settings.INVOICE_DUE_DAYS)).isoformat()
    invoice_rows: list[list[Any]] = []
    line_rows: list[tuple[Any, ...]] = []
    events: list[NewEvent] = []
    new_ids: list[str] = []
    by_currency: Counter[str] = Counter()
    # Build everything first; the numbers come last, because the series row stays locked
    # from their allocation to the commit and every concurrent chunk waits for it.
    for plan in plans:
        row, customer = plan.row, plan.row.customer
        label = (row.description or "Subscription")[:400]
        for period in plan.periods:
            invoice_id = uuid.uuid4()
            start, end = period.start.isoformat(), period.end.isoformat()
            amount = period.amount_minor
            invoice_rows.append(
                [
                    invoice_id,
                    None,
                    series,
                    None,
                    row.agreement_id,
                    customer["external_ref"],
                    customer["name"],
                    customer["email"],
                    start,
                    end,
                    row.currency,
                    amount,
                    due,
                    Invoice.Status.OPEN.value,
                    now_iso,
                    "",
                    "",
                    1,
                ]
            )
            line_rows.append((invoice_id, f"{label} ({start} to {end})", 1, amount, amount))
            events.append(
                NewEvent(
                    contracts.INVOICE_ISSUED,
                    str(invoice_id),
                    1,
                    {
                        "invoice_id": str(invoice_id),
                        "number": None,
                        "agreement_id": row.agreement_id,
                        "customer": customer,
                        "period_start": start,
                        "period_end": end,
                        "total_minor": amount,
                        "currency": row.currency,
                        "due_date": due,
                    },
                    occurred_at=now,
                )
            )
            new_ids.append(str(invoice_id))
            by_currency[row.currency] += 1
    _move_cursors(plans)
    if invoice_rows:
        copy_rows(InvoiceLine._meta.db_table, LINE_COLUMNS, line_rows)  # FK checked at commit
        n = _allocate_numbers(series, count)
        for invoice_row, event in zip(invoice_rows, events, strict=True):
            number = f"{series}-{n:07d}"
            invoice_row[1], invoice_row[3] = number, n
            event.data["number"] = number
            n += 1
        copy_rows(Invoice._meta.db_table, INVOICE_COLUMNS, invoice_rows)
        record_events(sender=Invoice, events=events)
    if run_id is not None:
        DailyRun.objects.filter(pk=run_id).update(
            chunks_done=F("chunks_done") + 1,
            invoices_issued=F("invoices_issued") + count,
            agreements_flagged=F("agreements_flagged") + result.flagged,
        )
    if new_ids and PendingPaymentOutcome.objects.exists():
        _apply_pending_outcomes(new_ids)
    for currency, n_issued in by_currency.items():
        metrics.INVOICES_ISSUED.labels(currency).inc(n_issued)
    return result


INVOICE_COLUMNS = (
    "id",
    "number",
    "series",
    "sequence",
    "agreement_id",
    "customer_ref",
    "customer_name",
    "customer_email",
    "period_start",
    "period_end",
    "currency",
    "total_minor",
    "due_date",
    "status",
    "issued_at",
    "closed_reason",
    "payment_id",
    "aggregate_version",
)
LINE_COLUMNS = ("invoice_id", "description", "quantity", "unit_amount_minor", "amount_minor")


def _allocate_numbers(series: str, count: int) -> int:
    """Reserve ``count`` consecutive numbers in ``series``; returns the first. Gap-free:
    the counter row stays locked until this transaction commits or rolls back."""
    InvoiceSeries.objects.get_or_create(name=series)
    with connection.cursor() as cur:
        cur.execute(
            "UPDATE invoicing_invoiceseries SET last_number = last_number + %s"
            " WHERE name = %s RETURNING last_number",
            [count, series],
        )
        last = cur.fetchone()[0]
    return int(last) - count + 1


def _move_cursors(plans: list[AgreementPlan]) -> None:
    # An approved catch-up is used up once billed; a flagged agreement stays where it was.
    values = [(p.row.pk, p.next_index, p.next_start, p.flagged, False) for p in plans]
    if not values:
        return
    with connection.cursor() as cur:
        execute_values(
            cur,
            """
            UPDATE invoicing_billableagreement AS b
               SET next_period_index = v.idx, next_period_start = v.start::date,
                   flagged_reason = v.flag, catchup_approved = v.approved, updated_at = now()
              FROM (VALUES %s) AS v(id, idx, start, flag, approved)
             WHERE b.id = v.id
            """,
            values,
            page_size=2000,
        )


def _apply_pending_outcomes(invoice_ids: list[str]) -> None:
    pending = list(PendingPaymentOutcome.objects.filter(invoice_id__in=invoice_ids))
    for outcome in pending:
        if outcome.outcome == "paid":
            invoice_mark_paid(
                invoice_id=outcome.invoice_id,
                payment_id=outcome.payment_id,
                paid_at=outcome.detail.get("paid_at"),
            )
        else:
            invoice_mark_uncollectible(
                invoice_id=outcome.invoice_id,
                payment_id=outcome.payment_id,
                reason=outcome.detail.get("reason", ""),
            )
        outcome.delete()


@dataclass
class RunSummary:
    run_date: date
    chunks: int = 0
    issued: int = 0
    flagged: int = 0
    totals: Counter[str] = field(default_factory=Counter)


def invoices_run_inline(*, run_date: date, dry_run: bool = False, progress: Any = None) -> RunSummary:
    """The daily run in this process, chunk after chunk (operators' command and the preview)."""
    summary = RunSummary(run_date=run_date)
    run: DailyRun | None = None
    if dry_run:
        ranges = list(chunk_ranges(run_date))
    else:
        run, ranges = daily_run_start(run_date=run_date)
    for pk_from, pk_to in ranges:
        r = invoices_issue_chunk(
            run_date=run_date, pk_from=pk_from, pk_to=pk_to, run_id=run.pk if run else None, dry_run=dry_run
        )
        summary.chunks += 1
        summary.issued += r.issued
        summary.flagged += r.flagged
        summary.totals.update(r.totals)
        if progress:
            progress(1)
    if run is not None and ranges:
        daily_run_finish(run=run)
    return summary


def flagged_agreements() -> list[BillableAgreement]:
    return list(BillableAgreement.objects.exclude(flagged_reason="").order_by("agreement_id"))


# ---------------------------------------------------------------------------
# Invoice state from payment events (order-insensitive)
# ---------------------------------------------------------------------------
def _bump(invoice: Invoice, event_type: str, data: dict[str, Any]) -> None:
    record_change(sender=Invoice, obj=invoice, type=event_type, data=data)


@transaction.atomic
def invoice_mark_paid(
    *, invoice_id: str, payment_id: str, paid_at: str | datetime | None = None
) -> Invoice | None:
    """A payment succeeded: the invoice is paid (even if marked uncollectible before). Idempotent."""
    invoice = Invoice.objects.select_for_update().filter(pk=invoice_id).first()
    if invoice is None:
        PendingPaymentOutcome.objects.get_or_create(
            invoice_id=invoice_id,
            payment_id=payment_id,
            outcome="paid",
            defaults={"detail": {"paid_at": str(paid_at) if paid_at else None}},
        )
        return None
    if invoice.status == Invoice.Status.PAID:
        return invoice
    when = timezone.now()
    invoice.status = Invoice.Status.PAID
    invoice.paid_at = when
    invoice.payment_id = payment_id
    _bump(
        invoice,
        contracts.INVOICE_PAID,
        {"invoice_id": str(invoice.id), "payment_id": payment_id, "paid_at": when.isoformat()},
    )
    return invoice


@transaction.atomic
def invoice_mark_uncollectible(*, invoice_id: str, payment_id: str, reason: str) -> Invoice | None:
    """Collection failed for good: open -> uncollectible. A paid invoice stays paid. Idempotent."""
    invoice = Invoice.objects.select_for_update().filter(pk=invoice_id).first()
    if invoice is None:
        PendingPaymentOutcome.objects.get_or_create(
            invoice_id=invoice_id,
            payment_id=payment_id,
            outcome="uncollectible",
            defaults={"detail": {"reason": reason}},
        )
        return None
    if invoice.status != Invoice.Status.OPEN:
        return invoice
    invoice.status = Invoice.Status.UNCOLLECTIBLE
    invoice.closed_reason = reason[:500]
    invoice.payment_id = payment_id
    _bump(
        invoice,
        contracts.INVOICE_MARKED_UNCOLLECTIBLE,
        {"invoice_id": str(invoice.id), "payment_id": payment_id, "reason": reason[:500]},
    )
    return invoice


@transaction.atomic
def invoice_void(*, invoice_id: str, reason: str) -> Invoice:
    """An operator voids an open invoice (issued in error). Idempotent for void invoices."""
    invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
    if invoice.status == Invoice.Status.VOID:
        return invoice
    if invoice.status != Invoice.Status.OPEN:
        from django.core.exceptions import ValidationError

        raise ValidationError(f"only open invoices can be voided; {invoice.number} is {invoice.status}")
    invoice.status = Invoice.Status.VOID
    invoice.closed_reason = reason[:500]
    _bump(invoice, contracts.INVOICE_VOIDED, {"invoice_id": str(invoice.id), "reason": reason[:500]})
    return invoice
