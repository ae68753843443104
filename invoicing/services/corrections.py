"""Corrections: the documents of every passed period converge to what the agreement's full
history says it owes, whatever the order and timing in which its events arrived.

For each period the daily run has passed (before the agreement's cursor), ``owed`` comes from
the billing rules over the projection, and ``billed`` is what exists: paid invoices net of their
credit notes, plus unpaid (open or uncollectible) invoices. When they differ:

- unpaid invoices of the period are voided (an issued invoice is never edited);
- if what was paid exceeds what is owed, credit notes give the difference back (payments refunds
  it through the gateway: see README, "Corrections");
- if less was paid than is owed, a new invoice (the period's next revision) bills the rest.

Periods that started more than INVOICING_MAX_CORRECTION_DAYS ago are not corrected on their own:
the agreement is flagged and an operator approves the correction in admin. A period whose invoice
an operator voided is waived: corrections leave it alone.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Sum

from core.calendar import period_index_on
from events import contracts
from events.publishing import record_event, recording_now

from .. import states
from ..models import BillableAgreement, CreditNote, CreditNoteLine, Invoice
from .billing import billing_today, owed_before_cursor
from .invoices import invoice_void
from .issuing import InvoiceDraft, allocate_numbers, issue_drafts, line_text

logger = logging.getLogger(__name__)
S = Invoice.Status


@dataclass
class PeriodCorrection:
    period_start: date
    owed: int
    billed: int
    voided: list[str] = field(default_factory=list)  # invoice numbers
    credited: int = 0
    reissued: int = 0


@dataclass
class ReconcileResult:
    corrected: list[PeriodCorrection] = field(default_factory=list)
    held: list[PeriodCorrection] = field(default_factory=list)  # too old: waiting for an operator


def agreement_reconcile(
    *,
    row: BillableAgreement,
    from_date: date | None = None,
    approved: bool = False,
    today: date | None = None,
) -> ReconcileResult:
    """Correct the documents of ``row``'s passed periods (from ``from_date`` on) to what they owe.

    Must run in the transaction that holds ``row`` locked (the projection's, or an operator's
    approval). Idempotent: a second call finds nothing to correct.
    """
    result = ReconcileResult()
    if not row.created_seen or row.next_period_index == 0 or row.start_date is None:
        return result
    today = today or billing_today()
    from_index = 0
    if from_date is not None:
        from_index = max(0, period_index_on(row.start_date, row.interval, row.interval_count, from_date))
    owed = owed_before_cursor(row, from_index)
    if not owed:
        return result
    invoices: dict[date, list[Invoice]] = defaultdict(list)
    # Locked: what is decided from these (void, credit, reissue) must still hold when it is done,
    # whatever an operator's void or a payment outcome does to them meanwhile.
    for inv in (
        Invoice.objects.select_for_update()
        .filter(agreement_id=row.agreement_id, period_start__gte=min(owed))
        .order_by("issued_at", "sequence", "pk")  # as invoices_mark_paid locks
    ):
        invoices[inv.period_start].append(inv)
    credited = _credited(row.agreement_id, min(owed))
    oldest_correctable = today - timedelta(days=settings.INVOICING_MAX_CORRECTION_DAYS)
    drafts: list[InvoiceDraft] = []
    now = recording_now()
    for start, (end, amount) in sorted(owed.items()):
        docs = invoices.get(start, [])
        paid = [i for i in docs if i.status == S.PAID]
        unpaid = [i for i in docs if i.status in states.UNPAID]
        paid_net = sum(i.total_minor - credited.get(i.pk, 0) for i in paid)
        billed = paid_net + sum(i.total_minor for i in unpaid)
        if billed == amount:
            continue
        if paid_net <= amount and any(i.voided_by == "operator" for i in docs):
            # an operator waived this period: it is never billed again; but money paid beyond
            # what it owes is still given back
            continue
        correction = PeriodCorrection(start, amount, billed)
        if start < oldest_correctable and not approved:
            result.held.append(correction)
            continue
        reason = f"corrected: period {start} owes {amount}, {billed} was billed (late agreement change)"
        for inv in unpaid:
            invoice_void(invoice_id=str(inv.pk), reason=reason, by="correction")
            correction.voided.append(inv.number)
        if paid_net > amount:
            correction.credited = _credit(paid, credited, paid_net - amount, reason, today, now)
        elif paid_net < amount:
            correction.reissued = amount - paid_net
            note = "" if not paid else f" - correction of {', '.join(i.number for i in paid)}"
            drafts.append(
                InvoiceDraft(
                    agreement_id=row.agreement_id,
                    customer=row.customer,
                    currency=row.currency,
                    period_start=start,
                    period_end=end,
                    amount_minor=amount - paid_net,
                    line=line_text(row.description, start, end, note),
                    revision=max((i.revision for i in docs), default=-1) + 1,
                )
            )
        result.corrected.append(correction)
    issue_drafts(drafts, issue_date=today, now=now)
    _flag(row, result, approved)
    if result.corrected:
        logger.info(
            "agreement %s: %d period(s) corrected, %d held for approval",
            row.agreement_id,
            len(result.corrected),
            len(result.held),
        )
    return result


def _credited(agreement_id: str, since: date) -> dict[uuid.UUID, int]:
    rows = (
        CreditNote.objects.filter(agreement_id=agreement_id, period_start__gte=since)
        .values("invoice_id")
        .annotate(total=Sum("total_minor"))
    )
    return {r["invoice_id"]: int(r["total"]) for r in rows}


def _credit(
    paid: list[Invoice], credited: dict[uuid.UUID, int], amount: int, reason: str, today: date, now: datetime
) -> int:
    """Credit ``amount`` back across ``paid`` invoices, the latest first. Returns what was credited."""
    left = amount
    for inv in reversed(paid):
        room = inv.total_minor - credited.get(inv.pk, 0)
        take = min(room, left)
        if take > 0:
            credit_note_issue(invoice=inv, amount_minor=take, reason=reason, issue_date=today, now=now)
            credited[inv.pk] = credited.get(inv.pk, 0) + take
            left -= take
        if left == 0:
            break
    return amount - left


def credit_note_issue(
    *, invoice: Invoice, amount_minor: int, reason: str, issue_date: date, now: datetime
) -> CreditNote:
    """A credit note on a paid invoice, numbered in its own gap-free series; records
    ``credit_note.issued`` (payments refunds the amount). In the caller's transaction."""
    series = settings.CREDIT_NOTE_SERIES_FORMAT.format(year=issue_date.year)
    n = allocate_numbers(series, 1)
    note = CreditNote.objects.create(
        id=uuid.uuid4(),
        number=f"{series}-{n:07d}",
        series=series,
        sequence=n,
        invoice=invoice,
        agreement_id=invoice.agreement_id,
        period_start=invoice.period_start,
        currency=invoice.currency,
        total_minor=amount_minor,
        reason=reason[:500],
        issued_at=now,
    )
    CreditNoteLine.objects.create(
        credit_note=note, description=f"Credit on {invoice.number}: {reason}"[:500], amount_minor=amount_minor
    )
    record_event(
        sender=CreditNote,
        type=contracts.CREDIT_NOTE_ISSUED,
        aggregate_id=str(note.id),
        aggregate_version=1,
        data={
            "credit_note_id": str(note.id),
            "number": note.number,
            "invoice_id": str(invoice.id),
            "agreement_id": invoice.agreement_id,
            "period_start": invoice.period_start.isoformat(),
            "total_minor": amount_minor,
            "currency": invoice.currency,
            "reason": note.reason,
        },
        occurred_at=now,
    )
    return note


def _flag(row: BillableAgreement, result: ReconcileResult, approved: bool) -> None:
    """Held periods flag the agreement (approval then corrects every passed period, from the
    first); an approved run clears the flag. A partial run never clears one it did not cover."""
    if result.held and not row.correction_flag:
        first = min(c.period_start for c in result.held)
        flag = (
            f"{len(result.held)} period(s) from {first} owe a different amount after a late change, but are "
            f"older than {settings.INVOICING_MAX_CORRECTION_DAYS} days: approve the correction"
        )
    elif approved and row.correction_flag:
        flag = ""
    else:
        return
    row.correction_flag = flag[:500]
    row.save(update_fields=["correction_flag", "updated_at"])


@transaction.atomic
def correction_approve(*, agreement_id: str) -> ReconcileResult:
    """An operator approves a flagged correction: every passed period is corrected now."""
    row = BillableAgreement.objects.select_for_update().get(agreement_id=agreement_id)
    return agreement_reconcile(row=row, approved=True)
