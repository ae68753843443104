"""Issuing invoices in bulk: rows, lines, gap-free numbers and ``invoice.issued`` events, with COPY.

Used by the daily run (thousands per chunk) and by corrections (a few). Everything is written
in the caller's transaction; the numbers are allocated last, because the series row stays
locked from their allocation to the commit and every concurrent issuer waits for it.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection

from core.bulk import copy_rows
from events import contracts
from events.operations import metrics
from events.publishing import NewEvent, record_events

from ..models import Invoice, InvoiceLine, InvoiceSeries, PendingPaymentOutcome
from .invoices import apply_pending_outcomes

INVOICE_COLUMNS = tuple(f.column for f in Invoice._meta.concrete_fields if f.column != "paid_at")
LINE_COLUMNS = ("invoice_id", "description", "quantity", "unit_amount_minor", "amount_minor")


@dataclass(frozen=True)
class InvoiceDraft:
    """One invoice to issue: an agreement's period, its amount and its line."""

    agreement_id: str
    customer: dict[str, str]
    currency: str
    period_start: date
    period_end: date
    amount_minor: int
    line: str
    revision: int = 0


def line_text(description: str, start: date, end: date, note: str = "") -> str:
    label = (description or "Subscription")[:400]
    return f"{label} ({start.isoformat()} to {end.isoformat()}){note}"[:500]


def series_for(day: date) -> str:
    return settings.INVOICE_SERIES_FORMAT.format(year=day.year)


def allocate_numbers(series: str, count: int) -> int:
    """Reserve ``count`` consecutive numbers in ``series``; returns the first. Gap-free:
    the counter row stays locked until this transaction commits or rolls back."""
    InvoiceSeries.objects.get_or_create(name=series)
    with connection.cursor() as cur:
        cur.execute(
            f"UPDATE {InvoiceSeries._meta.db_table} SET last_number = last_number + %s"
            " WHERE name = %s RETURNING last_number",
            [count, series],
        )
        last = cur.fetchone()[0]
    return int(last) - count + 1


def issue_drafts(drafts: list[InvoiceDraft], *, issue_date: date, now: datetime) -> list[str]:
    """Issue ``drafts`` in the current transaction; returns the new invoice ids.

    Each invoice gets one line and an ``invoice.issued`` event; its number comes from the
    series of ``issue_date``'s year, its due date ``INVOICE_DUE_DAYS`` after ``issue_date``.
    """
    if not drafts:
        return []
    series = series_for(issue_date)
    due = (issue_date + timedelta(days=settings.INVOICE_DUE_DAYS)).isoformat()
    now_iso = now.isoformat()
    invoices: list[dict[str, Any]] = []
    lines: list[tuple[Any, ...]] = []
    events: list[NewEvent] = []
    for d in drafts:
        invoice_id = uuid.uuid4()
        start, end = d.period_start.isoformat(), d.period_end.isoformat()
        invoices.append(
            {
                "id": invoice_id,
                "number": None,
                "series": series,
                "sequence": None,
                "agreement_id": d.agreement_id,
                "customer_ref": d.customer["external_ref"],
                "customer_name": d.customer["name"],
                "customer_email": d.customer["email"],
                "period_start": start,
                "period_end": end,
                "currency": d.currency,
                "total_minor": d.amount_minor,
                "due_date": due,
                "status": Invoice.Status.OPEN.value,
                "issued_at": now_iso,
                "closed_reason": "",
                "voided_by": "",
                "payment_id": "",
                "aggregate_version": 1,
                "revision": d.revision,
            }
        )
        lines.append((invoice_id, d.line, 1, d.amount_minor, d.amount_minor))
        events.append(
            NewEvent(
                contracts.INVOICE_ISSUED,
                str(invoice_id),
                1,
                {
                    "invoice_id": str(invoice_id),
                    "number": None,
                    "agreement_id": d.agreement_id,
                    "customer": d.customer,
                    "period_start": start,
                    "period_end": end,
                    "total_minor": d.amount_minor,
                    "currency": d.currency,
                    "due_date": due,
                },
                occurred_at=now,
            )
        )
    copy_rows(InvoiceLine._meta.db_table, LINE_COLUMNS, lines)  # the FK is checked at commit
    n = allocate_numbers(series, len(invoices))
    for invoice, event in zip(invoices, events, strict=True):
        invoice["number"], invoice["sequence"] = f"{series}-{n:07d}", n
        event.data["number"] = invoice["number"]
        n += 1
    copy_rows(
        Invoice._meta.db_table, INVOICE_COLUMNS, ([inv[c] for c in INVOICE_COLUMNS] for inv in invoices)
    )
    record_events(sender=Invoice, events=events)
    new_ids = [str(inv["id"]) for inv in invoices]
    if PendingPaymentOutcome.objects.exists():
        apply_pending_outcomes(new_ids)
    for currency, count in Counter(d.currency for d in drafts).items():
        metrics.INVOICES_ISSUED.labels(currency).inc(count)
    return new_ids
