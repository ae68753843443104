"""Legitimate text that looks like syntax (\\N, quotes, newlines) travels from an agreement to
its invoice unchanged: the service accepts it, the consumer handles it, the daily run copies it."""

from __future__ import annotations

from datetime import date

import pytest

from agreements.services import AgreementInput, agreement_create
from events.consumers import Event
from events.models import OutboxEvent
from invoicing.models import Invoice, InvoiceLine
from invoicing.services import invoices_run_inline, projection_apply

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
    projection_apply(
        event=Event(
            id=row.id,
            type=row.type,
            schema_version=row.schema_version,
            occurred_at=row.occurred_at,
            producer=row.producer,
            aggregate_type=row.aggregate_type,
            aggregate_id=row.aggregate_id,
            aggregate_version=row.aggregate_version,
            data=row.data,
        )
    )
    assert invoices_run_inline(run_date=date(2026, 1, 31)).issued == 1
    # then the invoice carries the text as typed (COPY once read a bare \N as NULL and failed)
    invoice = Invoice.objects.get(agreement_id=str(agreement.id))
    assert (invoice.customer_ref, invoice.customer_name) == ("\\N", "\\N")
    line = InvoiceLine.objects.get(invoice=invoice)
    assert line.description.startswith('Plan "Pro", with\ttabs\nand lines (')
