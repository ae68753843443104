"""payments' monitoring check: charges due and sent to no charging worker (no dispatch pass, no
sweep), told apart from a backlog the bound on the queue ahead of the gateway holds back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from events.models import OutboxEvent
from events.operations.alerts import monitor_run
from payments import selectors
from payments.models import Payment, PaymentAttempt
from payments.services import charges_dispatch
from tests.factories import payments_create

pytestmark = pytest.mark.django_db(transaction=True)


def test_charges_nobody_sends_raise_an_alert_and_it_resolves_once_they_are_sent(settings, empty_queues):
    # given three charges due for ten minutes, sent by no dispatch pass and no sweep, and room ahead
    settings.MONITOR_CHARGES_UNSENT_MAX_AGE_SECONDS = 300
    payments_create(3, Payment.Status.PENDING, timezone.now() - timedelta(minutes=10))
    # when monitoring runs: one alert, naming how many and how old
    assert "alert.charges_unsent" in monitor_run()
    summary = OutboxEvent.objects.get(type="alert.charges_unsent").data["summary"]
    assert summary.startswith("3 charge(s) due and not sent to a charging worker, the oldest for 6")
    # and the operator's command reads the same health model: it breaches too, with the repair
    with pytest.raises(CommandError) as exc:
        call_command("messaging_status", "--no-age")
    assert exc.value.returncode == 2
    # when a pass sends them, the alert resolves
    assert charges_dispatch() == 3
    assert "alert.resolved:charges_unsent" in monitor_run()


def test_charges_held_back_by_the_bound_or_just_opened_are_not_a_breach(settings, empty_queues):
    settings.MONITOR_CHARGES_UNSENT_MAX_AGE_SECONDS = 300
    # given charges opened a moment ago, with room ahead of the gateway: a pass is on its way
    payments_create(5, Payment.Status.PENDING, timezone.now() - timedelta(seconds=5))
    assert "alert.charges_unsent" not in monitor_run()
    # given the queue ahead of the gateway full (a bound of 2, two charges at the gateway) and
    # charges due for ten minutes behind it: a big daily run, held back by design
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 1
    settings.PAYMENT_DISPATCH_AHEAD_SECONDS = 2
    payments_create(2, Payment.Status.PROCESSING)
    payments_create(5, Payment.Status.PENDING, timezone.now() - timedelta(minutes=10))
    assert "alert.charges_unsent" not in monitor_run()
    # when the gateway has taken the two (room again) and the old ones are still not sent: a breach
    Payment.objects.filter(status=Payment.Status.PROCESSING).update(status=Payment.Status.SUCCEEDED)
    assert "alert.charges_unsent" in monitor_run()


def _tried(payment: Payment, *, hours_ago: float, outcome: str, http_status: int) -> None:
    """A try of ``payment``'s current key, started ``hours_ago``, answered so."""
    now = timezone.now()
    attempt = PaymentAttempt.objects.create(
        payment=payment, idempotency_key=payment.idempotency_key, outcome=outcome, http_status=http_status
    )
    started = now - timedelta(hours=hours_ago)
    PaymentAttempt.objects.filter(pk=attempt.pk).update(started_at=started, finished_at=started)


def test_a_charge_that_may_have_taken_money_unsettled_for_an_hour_raises_an_alert_until_it_is_settled(
    settings, empty_queues, monkeypatch
):
    settings.MONITOR_CHARGE_OUTCOME_UNKNOWN_SECONDS = 3600
    monkeypatch.setattr(selectors, "OUTCOME_UNKNOWN_READ", 2)  # fewer candidates read than 503s below
    payments_create(7, Payment.Status.PENDING, timezone.now() + timedelta(minutes=5))
    lost, odd, busy, recent, *down = Payment.objects.order_by("pk")
    # given, first of all, three payments refused by a gateway down three hours ago (took nothing)
    for p in down:
        _tried(p, hours_ago=3, outcome="transient", http_status=503)
    # given a try whose answer was lost two hours ago and, since, only refusals of the request
    _tried(lost, hours_ago=2, outcome="transient", http_status=0)
    _tried(lost, hours_ago=1.5, outcome="hard_decline", http_status=401)
    # a try answered two hours ago with a page the adapter does not understand (a proxy's 200)
    _tried(odd, hours_ago=2, outcome="transient", http_status=200)
    # a 429 two hours ago (it took nothing) then a lost answer a minute ago (not yet an hour old),
    # and a lost answer a minute ago alone
    _tried(busy, hours_ago=2, outcome="transient", http_status=429)
    _tried(busy, hours_ago=0.01, outcome="transient", http_status=0)
    _tried(recent, hours_ago=0.02, outcome="transient", http_status=0)

    assert "alert.charges_outcome_unknown" in monitor_run()
    alert = OutboxEvent.objects.get(type="alert.charges_outcome_unknown").data
    assert alert["summary"].startswith("2 charge(s) may have taken money the gateway has not confirmed")
    assert alert["details"]["oldest_age_seconds"] in range(7190, 7300)  # the lost answer's two hours
    assert sorted(alert["details"]["keys"]) == sorted([f"pay-{lost.pk}#1", f"pay-{odd.pk}#1"])

    # when the gateway answers the lost one's key (a decline: nothing taken) and the odd one's
    # payment succeeds (asked again, the success replayed), the alert resolves
    _tried(lost, hours_ago=0.01, outcome="soft_decline", http_status=402)
    Payment.objects.filter(pk=odd.pk).update(status=Payment.Status.SUCCEEDED)
    assert "alert.resolved:charges_outcome_unknown" in monitor_run()
