"""The admin as an operator's console, across contexts: money with its currency on every page,
ids that link to what they name (and to its events), history rows printed once."""

from __future__ import annotations

import re
import uuid
from datetime import date
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Permission, User

from agreements.services import AgreementInput, agreement_create
from events.consuming import Event
from events.models import OutboxEvent
from invoicing.models import CreditNote, Invoice
from invoicing.services import invoice_mark_paid, invoices_run_inline, projection_apply
from payments.models import Refund
from payments.services import payments_create_for_invoices
from tests.factories import event_from_row

pytestmark = pytest.mark.django_db
LINE = "Pro plan (2026-01-01 to 2026-02-01)"


def delivered(event_type: str) -> Event:
    """The recorded event as its consumer gets it (the relay and SQS are other tests' subject)."""
    return event_from_row(OutboxEvent.objects.get(type=event_type))


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser("op", password="pw"))
    return client


@pytest.fixture
def billed() -> SimpleNamespace:
    """An agreement of £15.00 a month, its first invoice, and the payment collecting it."""
    agreement = agreement_create(
        data=AgreementInput(
            external_ref="SUB-1001",
            customer_name="Ada Lovelace",
            customer_email="ada@example.com",
            description="Pro plan",
            amount_minor=1500,
            currency="GBP",
            interval="month",
            start_date=date(2026, 1, 1),
        )
    )
    projection_apply(event=delivered("agreement.created"))
    invoices_run_inline(run_date=date(2026, 1, 1))
    [(payment, _created)] = payments_create_for_invoices(invoices=[delivered("invoice.issued").data])
    return SimpleNamespace(agreement=agreement, invoice=Invoice.objects.get(), payment=payment)


def page(client, url: str) -> str:
    resp = client.get(url)
    assert resp.status_code == 200, (url, resp.status_code)
    return resp.content.decode()


def hrefs(html: str, text: str) -> list[str]:
    """The targets of the links whose text is ``text``."""
    return [
        href.replace("&amp;", "&")
        for href, label in re.findall(r'<a href="([^"]+)"[^>]*>([^<]*)</a>', html)
        if label.strip() == text
    ]


def listed_types(html: str) -> list[str]:
    """The event types in the rows of an event-store list."""
    return re.findall(r'<td class="field-type">([^<]+)</td>', html)


def test_money_shows_with_its_currency_on_lists_and_detail_pages(operator, billed):
    invoice, payment = billed.invoice, billed.payment
    refund = Refund.objects.create(
        id=uuid.uuid4(),
        key=f"closed:{invoice.pk}",
        invoice_id=str(invoice.pk),
        payment=payment,
        amount_minor=1500,
        currency="GBP",
        reason="charge taken on a closed invoice",
    )
    note = CreditNote.objects.create(
        id=uuid.uuid4(),
        number="CN-2026-0000001",
        series="CN-2026",
        sequence=1,
        invoice=invoice,
        agreement_id=invoice.agreement_id,
        period_start=invoice.period_start,
        currency="GBP",
        total_minor=1500,
        reason="price lowered after payment",
        issued_at=invoice.issued_at,
    )
    note.lines.create(description="Pro plan: given back", amount_minor=1500)
    pages = {
        "invoice list": "/admin/invoicing/invoice/",
        "invoice": f"/admin/invoicing/invoice/{invoice.pk}/change/",
        "payment list": "/admin/payments/payment/",
        "payment": f"/admin/payments/payment/{payment.pk}/change/",
        "refund": f"/admin/payments/refund/{refund.pk}/change/",
        "agreement": f"/admin/agreements/agreement/{billed.agreement.pk}/change/",
        "agreement list": "/admin/agreements/agreement/",
        "credit note": f"/admin/invoicing/creditnote/{note.pk}/change/",
        "credit note list": "/admin/invoicing/creditnote/",
    }
    for name, url in pages.items():
        html = page(operator, url)
        assert "£15.00" in html, name
        for raw in ("Total minor", "Unit amount minor", "Amount minor:", "1500 GBP", ">1500<"):
            assert raw not in html, (name, raw)
    invoice_page = page(operator, pages["invoice"])
    assert re.search(r'field-unit_amount">\s*<p>£15.00</p>', invoice_page)  # the line's inline too
    assert "<title>refund of £15.00 for invoice" in page(operator, pages["refund"])
    assert re.search(r'field-amount">\s*<p>£15.00</p>', page(operator, pages["credit note"]))


def test_an_invoice_line_is_printed_once(operator, billed):
    html = page(operator, f"/admin/invoicing/invoice/{billed.invoice.pk}/change/")
    assert html.count(LINE) == 1


def test_invoice_page_links_its_agreement_payment_and_their_events(operator, billed):
    invoice, agreement, payment = billed.invoice, billed.agreement, billed.payment
    html = page(operator, f"/admin/invoicing/invoice/{invoice.pk}/change/")

    [to_agreement] = hrefs(html, str(agreement.pk))
    assert to_agreement == f"/admin/agreements/agreement/{agreement.pk}/change/"
    assert "SUB-1001" in page(operator, to_agreement)
    [to_payments] = hrefs(html, "payments of this invoice")  # not paid yet: its payments, listed
    assert "£15.00" in page(operator, to_payments) and invoice.number in page(operator, to_payments)
    agreement_events, invoice_events = hrefs(html, "events")[0], hrefs(html, "events of this invoice")[0]
    assert agreement_events == f"/admin/events/outboxevent/?aggregate_id={agreement.pk}"
    assert listed_types(page(operator, agreement_events)) == ["agreement.created"]
    assert listed_types(page(operator, invoice_events)) == ["invoice.issued"]

    # once paid, the payment itself
    invoice_mark_paid(invoice_id=str(invoice.pk), payment_id=str(payment.pk))
    html = page(operator, f"/admin/invoicing/invoice/{invoice.pk}/change/")
    [to_payment] = hrefs(html, str(payment.pk))
    assert to_payment == f"/admin/payments/payment/{payment.pk}/change/"
    assert invoice.number in page(operator, to_payment)


def test_payment_page_links_its_invoice_and_events(operator, billed):
    invoice, payment = billed.invoice, billed.payment
    html = page(operator, f"/admin/payments/payment/{payment.pk}/change/")
    [to_invoice] = hrefs(html, invoice.number)
    assert to_invoice == f"/admin/invoicing/invoice/{invoice.pk}/change/"
    assert LINE in page(operator, to_invoice)
    [invoice_events] = hrefs(html, "events")
    assert listed_types(page(operator, invoice_events)) == ["invoice.issued"]
    [own_events] = hrefs(html, "events of this payment")
    assert own_events == f"/admin/events/outboxevent/?aggregate_id={payment.pk}"
    assert listed_types(page(operator, own_events)) == []  # none recorded yet: an empty list, not an error


def test_an_id_whose_object_is_not_in_this_database_is_shown_not_linked(operator, billed):
    # given an invoice for an agreement that lives in another database (only its events came here)
    Invoice.objects.filter(pk=billed.invoice.pk).update(agreement_id="A-elsewhere", payment_id="P-elsewhere")
    html = page(operator, f"/admin/invoicing/invoice/{billed.invoice.pk}/change/")
    assert "A-elsewhere <span class=\"console-note\">(not in this database)</span>" in html
    assert "P-elsewhere <span class=\"console-note\">(not in this database)</span>" in html
    assert "/admin/agreements/agreement/A-elsewhere/" not in html
    # its events are still one click away
    assert hrefs(html, "events")[0] == "/admin/events/outboxevent/?aggregate_id=A-elsewhere"


def test_a_clerk_who_may_see_only_invoices_gets_no_link_to_a_page_he_may_not_open(client, billed):
    # given a staff user allowed to view invoices, and nothing else
    clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_invoice"))
    client.force_login(clerk)
    # when he opens an invoice
    html = page(client, f"/admin/invoicing/invoice/{billed.invoice.pk}/change/")
    # then its agreement and payments are named, not linked, and there is no link to the event store
    assert str(billed.agreement.pk) in html and not hrefs(html, str(billed.agreement.pk))
    assert not hrefs(html, "events") and not hrefs(html, "events of this invoice")
    assert not hrefs(html, "payments of this invoice")
    # and every link in the invoice's fields opens for him (none answers 403)
    fields = html[html.index('<fieldset class="module aligned') : html.index('<div class="submit-row"')]
    for href, _label in re.findall(r'<a href="([^"]+)"[^>]*>([^<]*)</a>', fields):
        assert client.get(href.replace("&amp;", "&")).status_code == 200, href
    # while an operator allowed everything still gets every link
    client.force_login(User.objects.create_superuser("op2", password="pw"))
    html = page(client, f"/admin/invoicing/invoice/{billed.invoice.pk}/change/")
    assert hrefs(html, str(billed.agreement.pk)) and hrefs(html, "events of this invoice")


@pytest.mark.parametrize(
    ("currency", "amount_minor", "shown"),
    [
        ("JPY", 1500, "¥1,500"),  # no minor unit
        ("KWD", 1500, "KWD1.500"),  # three decimals
        ("GBP", 1500, "£15.00"),
        # ISO 4217 counts these in hundredths (thousandths for IQD), though people are usually shown
        # whole units: 1,500,000 minor units of rupiah are IDR 15,000.00, not IDR 1,500,000
        ("IDR", 1_500_000, "IDR15,000.00"),
        ("HUF", 1500, "HUF15.00"),
        ("IQD", 1500, "IQD1.500"),
    ],
)
def test_money_counts_the_minor_units_of_its_currency(operator, currency, amount_minor, shown):
    # given an agreement and its invoice in that currency
    agreement_create(
        data=AgreementInput(
            external_ref=f"SUB-{currency}",
            customer_name="Ada Lovelace",
            customer_email="ada@example.com",
            description="Pro plan",
            amount_minor=amount_minor,
            currency=currency,
            interval="month",
            start_date=date(2026, 1, 1),
        )
    )
    projection_apply(event=delivered("agreement.created"))
    invoices_run_inline(run_date=date(2026, 1, 1))
    invoice = Invoice.objects.get()
    # then the agreement list, the invoice list and the invoice's page show that amount
    assert f'<td class="field-price">{shown}</td>' in page(operator, "/admin/agreements/agreement/")
    assert f'<td class="field-total">{shown}</td>' in page(operator, "/admin/invoicing/invoice/")
    assert shown in page(operator, f"/admin/invoicing/invoice/{invoice.pk}/change/")
