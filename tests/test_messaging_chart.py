"""The Messaging page's 30-day chart: the data it embeds (30 dated days, each day's counts, totals
for the legend), Chart.js served from our static files, and, in headless Chromium, the chart drawn
with dated axes and per-day values on hover, without console errors (a screenshot is kept)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import expect, sync_playwright

from devsupport.backlog import outbox_backlog_insert
from events.models import Heartbeat, OutboxEvent, ProcessedEvent
from events.operations.chart import DAYS, chart_refresh
from events.operations.health import heartbeat_record
from events.topology import aws
from payments.models import Payment
from tests.browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS
from tests.factories import payments_create
from tests.pages import chart_json, day_at, messaging_page

pytestmark = pytest.mark.django_db(transaction=True)
DLQ = "billing-test-payments-events-dlq"


def test_the_chart_data_has_30_dated_days_with_each_days_counts_and_totals(client, empty_queues):
    # given events published 0, 2 (twice) and 29 days ago, and one 40 days ago (outside the chart)
    outbox_backlog_insert(5, published=True, spread_seconds=1)  # invoice.issued events
    for event, days_ago in zip(OutboxEvent.objects.order_by("id"), (0, 2, 2, 29, 40), strict=True):
        at = day_at(days_ago)
        OutboxEvent.objects.filter(pk=event.pk).update(occurred_at=at, published_at=at)
    # and events handled 1 and 2 days ago
    for days_ago in (1, 2):
        handled = ProcessedEvent.objects.create(
            consumer="payments", event_id=uuid.uuid4(), event_type="invoice.issued", payload_hash="x"
        )
        ProcessedEvent.objects.filter(pk=handled.pk).update(processed_at=day_at(days_ago, hour=1))
    # when beat's chart task counts, and the page is opened
    chart_refresh()
    page = messaging_page(client)
    data = chart_json(page)
    # then the chart has the last 30 days, dated, oldest first, ending today
    today = timezone.localdate()
    assert data["days"] == [(today - timedelta(days=29 - i)).isoformat() for i in range(30)]
    series = {s["key"]: s for s in data["series"]}
    assert [s["label"] for s in data["series"]] == ["events published", "events handled", "invoices issued"]
    # and each day's value where it belongs, with the 30 days' total for the legend
    published = series["published"]["values"]
    assert (published[29], published[27], published[0], sum(published)) == (1, 2, 1, 4)
    assert series["published"]["total"] == 4 and series["invoices"]["values"] == published
    assert series["handled"]["values"][28] == 1 and series["handled"]["values"][27] == 1
    assert series["handled"]["total"] == 2
    assert "Counted " in page


def test_the_chart_library_is_served_from_our_static_files(settings, tmp_path):
    page_js = "events/vendor/chartjs/chart.umd.min.js"
    found = finders.find(page_js)
    assert found and "Chart.js v4" in open(found, encoding="utf-8").read(200)
    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", "--noinput", verbosity=0)
    assert (tmp_path / page_js).is_file() and (tmp_path / "events" / "messaging_chart.js").is_file()


@pytest.mark.slow
def test_the_chart_renders_in_chromium_from_static_files_without_console_errors(
    live_server, empty_queues, sqs, settings, tmp_path
):
    # given a month of traffic counted for the chart, a DLQ holding a message, a stale daily run
    # and charges waiting at the gateway
    sqs.send_message(QueueUrl=aws.queue_url(DLQ), MessageBody=json.dumps({"type": "invoice.issued"}))
    per_day = [1 + days_ago % 4 for days_ago in range(DAYS)]  # 73 events, each handled the same day
    outbox_backlog_insert(sum(per_day), published=True, spread_seconds=1)
    events = iter(OutboxEvent.objects.order_by("id"))
    for days_ago, n in enumerate(per_day):
        ids, at = [next(events).pk for _ in range(n)], day_at(days_ago)
        OutboxEvent.objects.filter(pk__in=ids).update(occurred_at=at, published_at=at)
        ProcessedEvent.objects.bulk_create(
            ProcessedEvent(consumer="payments", event_id=i, event_type="invoice.issued", payload_hash="x")
            for i in ids
        )
        ProcessedEvent.objects.filter(event_id__in=ids).update(processed_at=at)
    # the last 3 days' 6 events are payments' (not invoices issued)
    OutboxEvent.objects.filter(occurred_at__gt=day_at(3)).update(type="payment.succeeded")
    chart_refresh()
    heartbeat_record(
        name="daily_run",
        detail={"run_date": "2026-11-26", "invoices_issued": 7, "agreements_flagged": 0,
                "duration_seconds": 2.5},
    )
    Heartbeat.objects.filter(name="daily_run").update(beat_at=timezone.now() - timedelta(hours=30))
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 100
    payments_create(3200, Payment.Status.PENDING)
    payments_create(3, Payment.Status.RETRY_SCHEDULED, timezone.now() + timedelta(days=1))
    User.objects.create_superuser("operator", password="a-long-operator-password")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []

            def console(m: Any) -> None:
                if m.type == "error":
                    errors.append(f"{m.text} {m.location.get('url')}")

            page.on("console", console)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            static: dict[str, int] = {}
            page.on("response", lambda r: static.update({r.url: r.status}) if "/static/" in r.url else None)
            page.goto(f"{live_server.url}/admin/login/?next=/admin/messaging/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", "a-long-operator-password")
            page.click("input[type=submit]")
            # when the Messaging page has drawn its chart
            page.wait_for_function("() => window.Chart && Chart.getChart('messaging-chart')")
            chart = page.evaluate(
                """() => { const c = Chart.getChart('messaging-chart');
                    return {labels: c.data.labels, legend: c.legend.legendItems.map(i => i.text),
                            ticks: c.scales.x.ticks.map(t => c.scales.x.getLabelForValue(t.value)),
                            yTitle: c.options.scales.y.title.text, width: c.chartArea.width}; }"""
            )
            # then Chart.js came from our static files, and the chart has 30 dated days and totals
            library = f"{live_server.url}/static/events/vendor/chartjs/chart.umd.min.js"
            assert static.get(library) == 200, static
            assert len(chart["labels"]) == DAYS and chart["labels"][-1] == timezone.localdate().isoformat()
            assert chart["legend"] == [
                f"events published ({DAYS} days: 73)",
                f"events handled ({DAYS} days: 73)",
                f"invoices issued ({DAYS} days: 67)",
            ]
            assert len(chart["ticks"]) >= 5 and chart["yTitle"] == "per day" and chart["width"] > 500
            # and hovering over a day shows each series' value for that day
            page.locator("#messaging-chart").scroll_into_view_if_needed()
            x, y = page.evaluate(
                """() => { const c = Chart.getChart('messaging-chart');
                    const box = c.canvas.getBoundingClientRect();
                    return [box.left + c.scales.x.getPixelForValue(27), box.top + c.chartArea.top + 20]; }"""
            )
            page.mouse.move(x, y)
            page.wait_for_function("() => Chart.getChart('messaging-chart').tooltip.opacity > 0")
            tooltip = page.evaluate(
                """() => { const t = Chart.getChart('messaging-chart').tooltip;
                    return {title: t.title, body: t.body.map(b => b.lines.join(' '))}; }"""
            )
            day = timezone.localdate() - timedelta(days=2)
            assert str(day.year) in tooltip["title"][0] and str(day.day) in tooltip["title"][0]
            assert tooltip["body"] == ["events published: 3", "events handled: 3", "invoices issued: 0"]
            # and the highlights and the payments panel are there too
            expect(page.locator(f'tr[data-queue="{DLQ}"]')).to_have_class(re.compile("attention"))
            expect(page.locator("#daily-run-section")).to_have_class("attention")
            expect(page.locator("#payments-forecast")).to_contain_text("3,200 pending at 100/s: done by")
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            for path in (SCREENSHOTS / "messaging-page.png", tmp_path / "messaging-page.png"):
                page.screenshot(path=str(path), full_page=True)
            assert errors == []
        finally:
            browser.close()
