"""In a real browser (headless Debian Chromium, driven by Playwright): an operator logs in, opens
the Messaging page, sees a message in a DLQ, redrives it, and sees the depth drop."""

from __future__ import annotations

import json
import shutil

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect, sync_playwright

from events.topology import aws

DLQ = "billing-test-invoicing-events-dlq"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_operator_redrives_a_dlq_from_the_messaging_page(live_server, empty_queues, sqs, tmp_path):
    User.objects.create_superuser("operator", password="a-long-operator-password")
    sqs.send_message(QueueUrl=aws.queue_url(DLQ), MessageBody=json.dumps({"type": "agreement.created"}))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{live_server.url}/admin/login/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", "a-long-operator-password")
            page.click("input[type=submit]")
            page.click("text=Messaging")
            row = page.locator(f'tr[data-queue="{DLQ}"]')
            assert row.locator("td.visible").inner_text() == "1"
            row.locator("text=Redrive…").click()
            assert "would move back" in page.locator("#redrive-confirm").inner_text()
            page.click("#redrive-confirm input[type=submit]")
            expect(page.locator("body")).to_contain_text("Moved 1 message(s)")  # waits for the page
            expect(page.locator(f'tr[data-queue="{DLQ}"] td.visible')).to_have_text("0")
            page.screenshot(path=str(tmp_path / "messaging.png"))
        finally:
            browser.close()
