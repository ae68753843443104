"""The busiest lists at 1,400 px in a real browser (headless Debian Chromium, driven by
Playwright): invoice numbers on one line, every column inside the window."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Locator, Page, sync_playwright

from invoicing.models import Invoice
from payments.models import Payment
from tests.browser import CHROMIUM, CHROMIUM_ARGS

WIDTH = 1400
LONG_NAME = "Bartholomew Featherstonehaugh-Smythe"


def invoices_and_payments(n: int) -> None:
    """``n`` invoices (long names, big and small amounts, corrections) and their payments."""
    now = timezone.now()
    for i in range(n):
        start = date(2026, 1, 1) + timedelta(days=31 * (i % 12))
        invoice = Invoice.objects.create(
            id=uuid.uuid4(),
            number=f"INV-2026-{i + 1:07d}",
            series="INV-2026",
            sequence=i + 1,
            agreement_id=str(uuid.uuid4()),
            customer_ref=f"SUB-{10000 + i}",
            customer_name=LONG_NAME if i % 3 == 0 else "Ada Lovelace",
            customer_email="billing@example.com",
            period_start=start,
            period_end=start + timedelta(days=31),
            currency="GBP" if i % 2 else "EUR",
            total_minor=1_234_567 if i % 5 == 0 else 1500,
            due_date=start + timedelta(days=14),
            status="open" if i % 4 else "uncollectible",
            issued_at=now - timedelta(minutes=i),
            revision=i % 2,
        )
        Payment.objects.create(
            id=uuid.uuid4(),
            invoice_id=str(invoice.pk),
            invoice_number=invoice.number,
            customer_ref=invoice.customer_ref,
            customer_email=invoice.customer_email,
            amount_minor=invoice.total_minor,
            currency=invoice.currency,
            status="retry_scheduled" if i % 2 else "failed",
            dunning_step=i % 4,
            last_error_class="soft_decline" if i % 2 else "hard_decline",
            next_attempt_at=now + timedelta(days=i % 7),
        )


def line_height(element: Locator) -> float:
    return float(element.evaluate("e => parseFloat(getComputedStyle(e).lineHeight) || 16"))


def assert_fits(page: Page, number_cells: str) -> None:
    # each number is one line of text
    numbers = page.locator(number_cells).all()
    assert len(numbers) == 30
    for number in numbers:
        box = number.bounding_box()
        assert box is not None and box["height"] < 1.5 * line_height(number), box
    # every column is inside the list (nothing scrolled away) and inside the window
    results = page.locator("#changelist .results")
    assert results.evaluate("e => e.scrollWidth <= e.clientWidth"), "the list scrolls sideways"
    last = page.locator("#result_list thead th").last.bounding_box()
    assert last is not None and last["x"] + last["width"] <= WIDTH, last
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_invoice_and_payment_lists_fit_1400_px_with_numbers_on_one_line(live_server, tmp_path):
    User.objects.create_superuser("operator", password="a-long-operator-password")
    invoices_and_payments(30)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            page.goto(f"{live_server.url}/admin/login/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", "a-long-operator-password")
            page.click("input[type=submit]")

            page.goto(f"{live_server.url}/admin/invoicing/invoice/")
            page.screenshot(path=str(tmp_path / "invoices-1400.png"), full_page=True)
            assert_fits(page, "#result_list th.field-number a")

            page.goto(f"{live_server.url}/admin/payments/payment/")
            page.screenshot(path=str(tmp_path / "payments-1400.png"), full_page=True)
            assert_fits(page, "#result_list th.field-invoice_number a")
        finally:
            browser.close()
