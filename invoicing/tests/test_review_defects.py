"""Defects found in review: each test states what must hold and fails on the code reviewed."""

from __future__ import annotations

from datetime import date

import pytest
from django.db.models import Sum

from invoicing.models import CreditNote, Invoice
from invoicing.services import invoice_mark_paid, invoice_void, invoices_run_inline, projection_apply

from .factories import agreement_event

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _today(monkeypatch, settings):
    """ "Today" is 2026-06-01 and corrections up to a year old apply on their own."""
    monkeypatch.setattr("invoicing.services.corrections.billing_today", lambda: date(2026, 6, 1))
    settings.INVOICING_MAX_CORRECTION_DAYS = 365


def deliver(type: str, version: int, **data: object) -> None:
    projection_apply(event=agreement_event(type, "A", version, **data))


def test_waiving_a_supplementary_invoice_does_not_keep_money_paid_for_a_period_that_owes_nothing():
    # given April billed (1000) and paid
    deliver("agreement.created", 1, start_date="2026-01-01")
    invoices_run_inline(run_date=date(2026, 4, 1))
    april = Invoice.objects.get(agreement_id="A", period_start=date(2026, 4, 1))
    invoice_mark_paid(invoice_id=str(april.id), payment_id="pay-april")
    # and a late price rise for April billed the 500 more (revision 1), which an operator waived
    deliver("agreement.price_changed", 2, amount_minor=1500, currency="EUR", effective_from="2026-04-01")
    supplement = Invoice.objects.get(agreement_id="A", period_start=date(2026, 4, 1), revision=1)
    assert supplement.total_minor == 500
    invoice_void(invoice_id=str(supplement.id), reason="goodwill: the rise starts in May")

    # when a pause from April 1 arrives late: by the agreement's history April owes nothing at all
    deliver("agreement.paused", 3, paused_from="2026-04-01")

    # then the 1000 paid for April goes back (a credit note): the operator waived the 500 more,
    # not the customer's right to the money of a period that owes nothing
    credited = CreditNote.objects.filter(agreement_id="A", period_start=date(2026, 4, 1)).aggregate(
        s=Sum("total_minor")
    )["s"]
    assert credited == 1000, f"credited {credited}: the customer keeps paying 1000 for a paused April"
