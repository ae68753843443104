"""Opening collection: one payment per issued invoice, due to be charged at once.

However often ``invoice.issued`` arrives, an invoice has one payment (unique invoice id, and the
per-invoice lock that ``invoice.voided`` takes too). An invoice voided before its
``invoice.issued`` got here (a ``ClosedInvoice`` note) gets a payment that starts cancelled.
Invoices issued together (a receive batch) open together: a few statements for all of them. Their
charges are not sent from here: the commit kicks a dispatch pass (services/dispatching.py), which
sends the due charges of every consumer process in batches, so handling ``invoice.issued`` costs
no call to the broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from core.bulk import insert_rows

from ..dispatch import charge_kicker
from ..models import ClosedInvoice, Payment
from .charging import cancel


def payment_create_for_invoice(*, data: dict[str, Any]) -> tuple[Payment, bool]:
    """One payment per invoice, however often invoice.issued arrives; its charge is sent by the
    dispatch pass its commit kicks. An invoice voided before its ``invoice.issued`` got here starts cancelled.
    Returns (payment, created)."""
    [result] = payments_create_for_invoices(invoices=[data])
    return result


def lock_invoices(invoice_ids: Iterable[str]) -> datetime:
    """Serialize, until the transaction ends, everything payments does about these invoices.

    ``invoice.issued`` and ``invoice.voided`` can be handled at the same moment by two consumer
    threads: without this, each misses the other's uncommitted row (the payment, the closed-invoice
    note) and a voided invoice is charged. Found by the soak. One statement, the locks taken in
    sorted order, so that two transactions locking overlapping sets never wait on each other in a
    cycle. Returns the database's clock at the transaction's start (``now()``), which comes with
    the locks in the same round trip."""
    keys = [f"payments.invoice:{i}" for i in sorted(set(invoice_ids))]
    with connection.cursor() as cur:  # unnest yields the keys in array order, locked one by one
        cur.execute(
            "SELECT now(), count(*) FROM ("
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(%s::text[]) AS k) AS locks",
            [keys],
        )
        return cur.fetchone()[0]


@transaction.atomic(savepoint=False)
def payments_create_for_invoices(*, invoices: list[dict[str, Any]]) -> list[tuple[Payment, bool]]:
    """``payment_create_for_invoice`` for each ``invoice.issued`` data, in order, in one transaction:
    (payment, created) for each (an invoice repeated in the list is created once)."""
    ids = sorted({data["invoice_id"] for data in invoices})
    # Due by the database's clock, which a dispatch pass compares ``next_attempt_at`` with: due by
    # this host's clock, if it runs ahead, it would not be due yet for the pass its commit kicks,
    # and would wait for the sweep.
    due_at = lock_invoices(ids)
    candidates = {}
    for data in invoices:  # the first data of a repeated invoice
        candidates.setdefault(data["invoice_id"], data)
    new = [_new_payment(data, due_at) for data in candidates.values()]
    inserted = {i for (i,) in insert_rows(new, ignore_conflicts=True, returning=("invoice_id",))}
    new = [p for p in new if p.invoice_id in inserted]
    payments = {p.invoice_id: p for p in new}
    if len(payments) < len(ids):  # already there (a redelivery): read, not changed
        payments.update({p.invoice_id: p for p in Payment.objects.filter(invoice_id__in=set(ids) - inserted)})
    closed = _closed_notes([p.invoice_id for p in new])
    due = False
    for payment in new:
        note = closed.get(payment.invoice_id)
        if note is None:
            due = True
            continue
        payment.invoice_closed_at, payment.invoice_closed_reason = note
        cancel(payment, f"invoice voided before it was collected: {note[1]}")
    if due:
        transaction.on_commit(charge_kicker.request)
    created = {p.invoice_id for p in new}
    results = []
    for data in invoices:
        invoice_id = data["invoice_id"]
        results.append((payments[invoice_id], invoice_id in created))
        created.discard(invoice_id)  # a repeat finds the payment the first one created
    return results


def _closed_notes(invoice_ids: list[str]) -> dict[str, tuple[Any, str]]:
    """(closed_at, reason) of the invoices voided before their payment was created."""
    if not invoice_ids:
        return {}
    with connection.cursor() as cur:
        cur.execute(
            f'SELECT invoice_id, closed_at, reason FROM "{ClosedInvoice._meta.db_table}" '  # noqa: S608 - our table
            "WHERE invoice_id = ANY(%s::varchar[])",
            [invoice_ids],
        )
        return {invoice_id: (closed_at, reason) for invoice_id, closed_at, reason in cur.fetchall()}


def _new_payment(data: dict[str, Any], due_at: datetime) -> Payment:
    return Payment(
        id=uuid.uuid4(),
        invoice_id=data["invoice_id"],
        invoice_number=data["number"],
        customer_ref=data["customer"]["external_ref"],
        customer_email=data["customer"]["email"],
        amount_minor=data["total_minor"],
        currency=data["currency"],
        next_attempt_at=due_at,  # due: the dispatch pass its commit kicks sends it (or the sweep)
    )
