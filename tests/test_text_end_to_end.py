"""Legitimate text that looks like syntax (\\N, quotes, newlines) travels from an agreement to
its invoice unchanged: the service accepts it, the consumer handles it, the daily run copies it."""

from __future__ import annotations

from datetime import date

import pytest

from agreements.services import AgreementInput, agreement_create
from events.models import OutboxEvent
from invoicing.models import Invoice, InvoiceLine
from invoicing.services import invoices_run_inline, projection_apply
from tests.factories import event_from_row

pytestmark = pytest.mark.django_db


def test_a_customer_named_backslash_n_is_invoiced_as_such():
    # given an agreement whose customer and reference are the two characters \ and N
    agreement = agreement_create(
        data=AgreementInput(
            external_ref="\\N",
            customer_name="\\N",
            customer_email="n@example.com",
            description='Plan "Pro", with\ttabs\nand lines',
            amount_minor=1000,
            currency="EUR",
            interval="month",
            start_date=date(2026, 1, 31),
        )
    )
    # when its agreement.created reaches invoicing and the daily run bills it
    row = OutboxEvent.objects.get(aggregate_id=str(agreement.id))
    # (straight to invoicing's handler service: the delivery path is the consumers' tests' job)
    projection_apply(event=event_from_row(row))
    assert invoices_run_inline(run_date=date(2026, 1, 31)).issued == 1
    # then the invoice carries the text as typed (COPY once read a bare \N as NULL and failed)
    invoice = Invoice.objects.get(agreement_id=str(agreement.id))
    assert (invoice.customer_ref, invoice.customer_name) == ("\\N", "\\N")
    line = InvoiceLine.objects.get(invoice=invoice)
    assert line.description.startswith('Plan "Pro", with\ttabs\nand lines (')
