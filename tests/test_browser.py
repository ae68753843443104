"""An operator's walk in a real browser (headless Debian Chromium, driven by Playwright), over the
real stack: PostgreSQL, the SNS/SQS endpoint, a Celery worker and invoicing's push consumer.

The operator imports a file and previews and issues the day's invoices with the operator's
commands, then in the admin: finds the invoice with its money formatted and follows its link to
the agreement; sees a poisoned message's DLQ highlighted on the Messaging page; redrives it
through the dry-run confirmation; reads the chart's dated days. Every page visited is saved as a
screenshot under ``.data/test-artifacts/operator-walk/`` (git-ignored) for a reviewer to look at.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import Page, expect, sync_playwright

from agreements.models import Agreement
from core.calendar import billing_today
from events import topology
from events.consuming.config import consumer_configs
from events.consuming.push import PushConsumer
from events.operations.chart import DAYS, chart_refresh
from events.topology import aws
from invoicing.models import BillableAgreement, Invoice
from tests.browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS
from tests.helpers import wait_until

PASSWORD = "a-long-operator-password"
QUEUE = topology.event_queue_name("invoicing")
DLQ = f"{QUEUE}-dlq"  # the topology's naming: <queue name>-dlq
WALK = SCREENSHOTS / "operator-walk"


def write_import(path: Path) -> None:
    today = billing_today().isoformat()
    lines = ["external_ref,customer_name,customer_email,amount_minor,currency,interval,start_date"]
    lines += [f"WALK-{i},Customer {i},walk{i}@example.com,1500,GBP,month,{today}" for i in (1, 2, 3)]
    path.write_text("\n".join(lines) + "\n")


def command(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


class Walk:
    """The browser page, saving a numbered screenshot of each step."""

    def __init__(self, page: Page, base: str) -> None:
        self.page, self.base, self.step = page, base, 0
        WALK.mkdir(parents=True, exist_ok=True)
        for old in WALK.glob("*.png"):
            old.unlink()

    def shot(self, name: str) -> None:
        self.step += 1
        self.page.screenshot(path=str(WALK / f"{self.step:02d}-{name}.png"), full_page=True)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_operators_walk_from_import_to_redrive(
    live_server, settings, celery_worker, sqs, tmp_path, monkeypatch
):
    # Playwright's sync API runs an event loop in this thread; the walk's own reads and commands
    # between pages are plain synchronous Django (Playwright's documented setting for Django).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    settings.OUTBOX_KICK_RELAY = True  # commits kick the relay task in the real worker, as in make run
    User.objects.create_superuser("operator", password=PASSWORD)
    consumer = PushConsumer(consumer_configs()["invoicing"])
    consumer.start()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            walk = Walk(page, live_server.url)
            # the operator logs in
            page.goto(f"{live_server.url}/admin/login/")
            walk.shot("login")
            page.fill("#id_username", "operator")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            expect(page.locator("#site-name")).to_be_visible()
            walk.shot("admin-index")

            # imports a file of three agreements starting today
            path = tmp_path / "agreements.csv"
            write_import(path)
            assert "Imported 3" in command("agreements_import", str(path))
            wait_until(lambda: BillableAgreement.objects.filter(created_seen=True).count() == 3, timeout=60)

            # previews the day's run, then issues it
            preview = command("invoices_preview")
            assert f"Would issue 3 invoice(s) for {billing_today().isoformat()}." in preview
            assert "GBP: £45.00" in preview
            assert "Issued 3 invoice(s)" in command("invoices_issue")

            # finds the invoices, money formatted with its currency, number on one line
            page.goto(f"{live_server.url}/admin/invoicing/invoice/")
            rows = page.locator("#result_list tbody tr")
            expect(rows).to_have_count(3)
            expect(rows.first).to_contain_text("£15.00")
            walk.shot("invoice-list")
            invoice = Invoice.objects.get(agreement_id=_agreement_id("WALK-2"))
            page.goto(f"{live_server.url}/admin/invoicing/invoice/{invoice.pk}/change/")
            body = page.locator("#content")
            expect(body).to_contain_text("£15.00")
            # never raw minor units (a "1500" standing alone; ids hold hex runs between dashes)
            assert not re.search(r"(?<![\w.-])1,?500(?![\w.-])", body.inner_text())
            walk.shot("invoice")
            # and follows the link to its agreement
            page.locator(".field-agreement a").first.click()
            expect(page).to_have_url(re.compile(rf"/admin/agreements/agreement/{_agreement_id('WALK-2')}/change/"))
            expect(page.locator("#content")).to_contain_text("WALK-2")
            walk.shot("agreement")

            # a message nobody signed reaches invoicing's queue: the consumer dead-letters it
            forged = json.dumps({"type": "agreement.created"})
            sqs.send_message(QueueUrl=aws.queue_url(QUEUE), MessageBody=forged)
            wait_until(lambda: _visible(sqs, DLQ) == 1, timeout=60)
            consumer.stop()  # so what is redriven stays in the queue for the operator to see
            chart_refresh()  # as beat's "Messaging chart" task does

            # the Messaging page highlights the DLQ, with its repair next to it
            page.goto(f"{live_server.url}/admin/messaging/")
            row = page.locator(f'tr[data-queue="{DLQ}"]')
            expect(row).to_have_class(re.compile("attention"))
            expect(row.locator("td.visible")).to_have_text("1")
            walk.shot("messaging-dlq-highlighted")
            # and the chart has 30 dated days, today's events among them
            page.wait_for_function("() => window.Chart && Chart.getChart('messaging-chart')")
            labels = page.evaluate("() => Chart.getChart('messaging-chart').data.labels")
            assert len(labels) == DAYS and labels[-1] == timezone.localdate().isoformat()
            legend = page.evaluate(
                "() => Chart.getChart('messaging-chart').legend.legendItems.map(i => i.text)"
            )
            assert any(t.startswith("invoices issued") and t.endswith(": 3)") for t in legend), legend

            # redrives it: the dry run says what would move, then the operator confirms
            row.locator("text=Redrive…").click()
            expect(page.locator("#redrive-confirm")).to_contain_text("would move back")
            walk.shot("redrive-dry-run")
            page.click("#redrive-confirm input[type=submit]")
            expect(page.locator("body")).to_contain_text("Moved 1 message(s)")
            expect(page.locator(f'tr[data-queue="{DLQ}"] td.visible')).to_have_text("0")
            expect(page.locator(f'tr[data-queue="{DLQ}"]')).not_to_have_class(re.compile("attention"))
            walk.shot("messaging-after-redrive")
            assert errors == []
        finally:
            browser.close()
            consumer.stop()
    assert len(list(WALK.glob("*.png"))) == 8


def _agreement_id(external_ref: str) -> str:
    return str(Agreement.objects.get(external_ref=external_ref).pk)


def _visible(sqs: Any, queue: str) -> int:
    url = aws.queue_url(queue)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])
