"""The payments panel of the Messaging page (registered by payments, read through its selectors):
charges waiting at the gateway's pace with a forecast of when they are done, retries per day."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from payments import selectors
from payments.models import Payment
from tests.factories import payments_create
from tests.pages import element, messaging_page

pytestmark = pytest.mark.django_db(transaction=True)


def _done_by(now: datetime, seconds: float) -> str:
    done = now + timedelta(seconds=seconds)
    whole = done.replace(second=0, microsecond=0)
    return f"{(whole if whole == done else whole + timedelta(minutes=1)):%H:%M}"


def test_the_payments_panel_forecasts_pending_charges_and_lists_retries_by_day(
    client, empty_queues, settings
):
    # given 3,100 charges waiting and 100 at the gateway now, at a gateway limit of 100 charges/s
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 100
    payments_create(3100, Payment.Status.PENDING, timezone.now() + timedelta(minutes=15))
    payments_create(100, Payment.Status.PROCESSING)
    # and dunning retries: two tomorrow, one in three days, one overdue; a succeeded payment
    now = timezone.now()
    payments_create(2, Payment.Status.RETRY_SCHEDULED, now + timedelta(days=1))
    payments_create(1, Payment.Status.RETRY_SCHEDULED, now + timedelta(days=3))
    payments_create(1, Payment.Status.RETRY_SCHEDULED, now - timedelta(minutes=1))
    payments_create(1, Payment.Status.SUCCEEDED, now + timedelta(days=2))
    # when the page is opened
    before = timezone.now()
    page = messaging_page(client)
    after = timezone.now()
    # then 3,200 pending at 100/s are done 32 s later
    _, forecast = element(page, "p", "id", "payments-forecast")
    expected = {f"3,200 pending at 100/s: done by {_done_by(t, 32)} UTC." for t in (before, after)}
    assert forecast in expected
    # and the retries still to come are listed per day
    tomorrow, in_three = (timezone.localtime(now + timedelta(days=d)).date() for d in (1, 3))
    assert element(page, "tr", "data-day", tomorrow.isoformat())[1].endswith("2")
    assert element(page, "tr", "data-day", in_three.isoformat())[1].endswith("1")
    assert len(re.findall(r'<tr data-day="', page)) == 2
    # and the overdue retry, due a minute ago and sent by no pass yet, is named with its age
    _, unsent = element(page, "p", "id", "payments-unsent")
    since = timezone.localtime(now - timedelta(minutes=1))
    assert unsent.startswith(
        f"1 due and not yet sent to a charging worker, the oldest due since {since:%Y-%m-%d %H:%M:%S}"
    )
    assert "at most 6,000 queued ahead of the gateway" in unsent  # 60 s at 100/s
    assert "check that a worker serves the default and payments task queues" in unsent


def test_the_payments_panel_says_when_nothing_waits(client, empty_queues):
    page = messaging_page(client)
    assert element(page, "p", "id", "payments-forecast")[1] == "No charges pending."
    assert element(page, "p", "id", "payments-retries")[1] == "No retries scheduled."
    unsent = element(page, "p", "id", "payments-unsent")[1]
    assert unsent == "Every due charge is sent to the charging workers."


def test_beyond_its_bound_the_forecast_says_more_than_and_uses_the_estimate(monkeypatch, settings):
    # given 60 pending charges and a count that stops at 10
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 100
    monkeypatch.setattr(selectors, "COUNT_LIMIT", 10)
    payments_create(60, Payment.Status.PENDING)
    with connection.cursor() as cur:
        cur.execute("ANALYZE payments_payment")
    # when forecast at a known time
    now = timezone.make_aware(datetime(2026, 11, 28, 14, 19, 50))
    forecast = selectors.payments_charge_forecast(now=now)
    # then it says "more than" the bound, the planner's figure, and an approximate time
    assert forecast.more and forecast.pending == 10
    assert 50 <= forecast.expected <= 70  # about 60: the planner's figure, not the bound
    assert forecast.text == (
        f"more than 10 (about {forecast.expected}) pending at 100/s: done by about 14:20 UTC."
    )
    assert forecast.done_by == timezone.make_aware(datetime(2026, 11, 28, 14, 20))


def test_beyond_its_bound_with_stale_statistics_the_forecast_is_a_lower_bound(monkeypatch, settings):
    # given statistics taken when 5 charges waited, and 55 more since (ANALYZE has not run again)
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 100
    monkeypatch.setattr(selectors, "COUNT_LIMIT", 10)
    payments_create(5, Payment.Status.PENDING)
    with connection.cursor() as cur:
        cur.execute("ANALYZE payments_payment")
    payments_create(55, Payment.Status.PENDING)
    # when forecast, the planner still thinks there are fewer than the bound
    forecast = selectors.payments_charge_forecast(now=timezone.make_aware(datetime(2026, 11, 28, 14, 19, 50)))
    assert forecast.more and (forecast.estimate or 0) <= 10
    # then the time is what the bound alone takes: no sooner than that
    assert forecast.text == "more than 10 pending at 100/s: done no sooner than 14:20 UTC."
