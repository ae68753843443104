"""The projection is a function of the SET of events: any order, any duplicates, same result."""

from __future__ import annotations

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invoicing.models import BillableAgreement
from invoicing.services import projection_apply

from .factories import agreement_event

EVENTS = [
    agreement_event("agreement.created", "P", 1, start_date="2026-01-31"),
    agreement_event(
        "agreement.price_changed", "P", 2, amount_minor=1500, currency="EUR", effective_from="2026-03-31"
    ),
    agreement_event("agreement.paused", "P", 3, paused_from="2026-05-01"),
    agreement_event("agreement.resumed", "P", 4, resumed_from="2026-06-01"),
    agreement_event(
        "agreement.price_changed", "P", 5, amount_minor=1800, currency="EUR", effective_from="2026-07-31"
    ),
    agreement_event("agreement.cancelled", "P", 6, effective_date="2026-09-30", at_period_end=True),
    # the same creation as recorded before v2 (no external ref): whichever order, the ref is kept
    agreement_event("agreement.created", "P", 1, schema_version=1, start_date="2026-01-31"),
]
FIELDS = [
    "external_ref",
    "created_seen",
    "customer",
    "currency",
    "interval",
    "interval_count",
    "start_date",
    "end_date",
    "prices",
    "toggles",
    "cancellations",
    "last_version",
    "next_period_index",
    "next_period_start",
]


def snapshot() -> dict:
    return {f: getattr(BillableAgreement.objects.get(agreement_id="P"), f) for f in FIELDS}


class Rollback(Exception):
    pass


def project(events) -> dict:
    try:
        with transaction.atomic():
            for e in events:
                projection_apply(event=e)
            result = snapshot()
            raise Rollback
    except Rollback:
        return result


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    order=st.permutations(range(len(EVENTS))),
    duplicates=st.lists(st.integers(min_value=0, max_value=len(EVENTS) - 1), max_size=6),
    positions=st.lists(st.integers(min_value=0, max_value=12), max_size=6),
)
def test_any_permutation_with_duplicates_gives_the_same_projection(order, duplicates, positions):
    expected = project(EVENTS)
    assert expected["external_ref"] == "SUB-P"  # from the v2 creation, listed before the v1
    shuffled = [EVENTS[i] for i in order]
    for dup, pos in zip(duplicates, positions, strict=False):
        shuffled.insert(min(pos, len(shuffled)), EVENTS[dup])
    assert project(shuffled) == expected


@pytest.mark.django_db
def test_a_cancel_before_its_create_is_kept_and_applied():
    projection_apply(event=EVENTS[5])
    row = BillableAgreement.objects.get(agreement_id="P")
    assert not row.created_seen and row.cancellations == [[6, "2026-09-30"]]
    projection_apply(event=EVENTS[0])
    row.refresh_from_db()
    assert row.created_seen and row.cancellations == [[6, "2026-09-30"]] and row.last_version == 6
