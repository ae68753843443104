"""Corrections racing operators and the admin: waivers, concurrent voids, the projection form."""

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


@pytest.mark.django_db(transaction=True)
def test_an_operator_void_that_lands_while_a_correction_runs_is_not_overridden_by_a_reissue(monkeypatch):
    import threading

    from django.db import connection

    from invoicing.services import corrections

    # given April billed (1000), open
    deliver("agreement.created", 1, start_date="2026-01-01")
    invoices_run_inline(run_date=date(2026, 4, 1))
    april = Invoice.objects.get(agreement_id="A", period_start=date(2026, 4, 1))

    # when an operator voids April (a waiver) just as a late price change is being projected: the
    # correction has read April as open and decided to void and reissue it; the void lands first
    real_void = corrections.invoice_void

    def operator_void_lands_first(**kwargs: object) -> object:
        def operator() -> None:
            try:
                invoice_void(invoice_id=str(april.id), reason="goodwill")
            finally:
                connection.close()

        t = threading.Thread(target=operator)
        t.start()
        t.join(timeout=3)  # (if the correction holds April locked, the operator waits for it)
        return real_void(**kwargs)

    monkeypatch.setattr(corrections, "invoice_void", operator_void_lands_first)
    deliver("agreement.price_changed", 2, amount_minor=1500, currency="EUR", effective_from="2026-04-01")

    # then one of the two orders is what happened: either the operator's void waived April (nothing
    # reissued), or the correction voided it and reissued it (the operator can waive that one);
    # never the operator's waiver recorded and April billed again anyway
    april.refresh_from_db()
    reissued = Invoice.objects.filter(agreement_id="A", period_start=date(2026, 4, 1), revision__gt=0)
    assert not (april.voided_by == "operator" and reissued.exists()), (
        "April voided by the operator (waived) and reissued as "
        f"{list(reissued.values_list('number', 'total_minor'))}"
    )


@pytest.mark.django_db(transaction=True)
def test_saving_an_agreement_in_admin_never_undoes_an_event_projected_meanwhile(client, monkeypatch):
    import threading

    from django.contrib.auth.models import User
    from django.db import connection

    from invoicing.admin import BillableAgreementAdmin
    from invoicing.models import BillableAgreement

    # given an agreement flagged for catch-up, which an operator opens in admin to approve it
    deliver("agreement.created", 1, start_date="2025-01-01")
    invoices_run_inline(run_date=date(2026, 4, 1))
    row = BillableAgreement.objects.get(agreement_id="A")
    assert row.flagged_reason
    client.force_login(User.objects.create_superuser("op", password="pw"))

    # when a price change is projected while the operator's save is on its way (after the admin
    # read the row, before it wrote it)
    real_save_model = BillableAgreementAdmin.save_model

    def projection_lands_meanwhile(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        def consumer() -> None:
            try:
                deliver(
                    "agreement.price_changed",
                    2,
                    amount_minor=1500,
                    currency="EUR",
                    effective_from="2026-05-01",
                )
            finally:
                connection.close()

        t = threading.Thread(target=consumer)
        t.start()
        t.join(timeout=3)
        return real_save_model(self, request, obj, form, change)

    monkeypatch.setattr(BillableAgreementAdmin, "save_model", projection_lands_meanwhile)
    resp = client.post(f"/admin/invoicing/billableagreement/{row.pk}/change/", {"catchup_approved": "on"})
    assert resp.status_code == 302, resp.content[:500]

    # then the operator's approval is saved and the projected price change is still there
    row.refresh_from_db()
    assert row.catchup_approved
    assert [p[1] for p in row.prices] == [1000, 1500], f"prices {row.prices}: the price change was lost"
