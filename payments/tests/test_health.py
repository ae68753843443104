"""payments' monitoring check: charges due and sent to no charging worker (no dispatch pass, no
sweep), told apart from a backlog the bound on the queue ahead of the gateway holds back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from events.models import OutboxEvent
from events.operations.alerts import monitor_run
from payments.models import Payment
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
