"""Agreements: validated changes, each with its event and the next aggregate_version."""

from __future__ import annotations

from datetime import date

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from agreements.models import Agreement
from agreements.services import (
    AgreementInput,
    agreement_cancel,
    agreement_change_price,
    agreement_create,
    agreement_pause,
    agreement_resume,
)
from events.models import OutboxEvent

pytestmark = pytest.mark.django_db


def new(**overrides) -> AgreementInput:
    base = dict(
        external_ref="EXT-1",
        customer_name="Ada",
        customer_email="ada@example.com",
        amount_minor=1999,
        currency="EUR",
        interval="month",
        start_date=date(2026, 1, 31),
    )
    return AgreementInput(**(base | overrides))


def test_create_records_agreement_created_version_1():
    a = agreement_create(data=new())
    event = OutboxEvent.objects.get()
    assert (event.type, event.aggregate_id, event.aggregate_version) == ("agreement.created", str(a.id), 1)
    assert event.schema_version == 2 and event.data["external_ref"] == "EXT-1"
    assert event.data["customer"] == {"external_ref": "EXT-1", "name": "Ada", "email": "ada@example.com"}


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"amount_minor": 0}, "amount_minor"),
        ({"amount_minor": -5}, "amount_minor"),
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "eur"}, "currency"),
        ({"interval": "fortnight"}, "interval"),
        ({"interval_count": 0}, "interval_count"),
        ({"end_date": date(2025, 1, 1)}, "end_date"),
        ({"customer_email": "not-an-email"}, "customer_email"),
    ],
)
def test_bad_input_is_a_clear_error_and_nothing_is_saved(overrides, field):
    with pytest.raises(ValidationError) as exc:
        agreement_create(data=new(**overrides))
    assert field in exc.value.message_dict
    assert not Agreement.objects.exists() and not OutboxEvent.objects.exists()


def test_database_constraints_hold_even_without_the_service():
    a = agreement_create(data=new())
    with pytest.raises(IntegrityError):
        Agreement.objects.filter(pk=a.pk).update(amount_minor=-1)


def test_lifecycle_events_carry_increasing_versions():
    a = agreement_create(data=new(start_date=date(2026, 1, 31)))
    agreement_change_price(agreement_id=a.id, amount_minor=2500, today=date(2026, 2, 10))
    agreement_pause(agreement_id=a.id, from_date=date(2026, 3, 1))
    agreement_resume(agreement_id=a.id, from_date=date(2026, 4, 1))
    agreement_cancel(agreement_id=a.id, at_period_end=True, today=date(2026, 4, 10))
    events = list(
        OutboxEvent.objects.order_by("aggregate_version").values_list("type", "aggregate_version", "data")
    )
    assert [(t, v) for t, v, _ in events] == [
        ("agreement.created", 1),
        ("agreement.price_changed", 2),
        ("agreement.paused", 3),
        ("agreement.resumed", 4),
        ("agreement.cancelled", 5),
    ]
    assert events[1][2]["effective_from"] == "2026-02-28"  # the next period, anchor Jan 31
    assert events[4][2] == {"agreement_id": str(a.id), "effective_date": "2026-04-30", "at_period_end": True}
    a.refresh_from_db()
    assert a.status == "cancelled" and a.aggregate_version == 5


def test_invalid_transitions_are_refused_without_an_event():
    a = agreement_create(data=new())
    with pytest.raises(ValidationError, match="cannot resume an agreement that is active"):
        agreement_resume(agreement_id=a.id)
    agreement_cancel(agreement_id=a.id)
    with pytest.raises(ValidationError, match="cannot pause an agreement that is cancelled"):
        agreement_pause(agreement_id=a.id)
    assert OutboxEvent.objects.count() == 2
