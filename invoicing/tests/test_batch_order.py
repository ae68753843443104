"""invoicing applies a receive batch in the order received, its two batch handlers included: a
payment received before a late price change for the period it paid is applied before it."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from events.consuming.batch import Received, process_batch
from events.consuming.runtime import HANDLED, ConsumerRuntime
from events.signing import signed_attributes
from invoicing.models import Invoice
from invoicing.services import invoices_run_inline, projection_apply
from invoicing.tests.factories import agreement_event
from tests.factories import envelope, payment_succeeded_envelope

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _today(monkeypatch: Any, settings: Any) -> None:
    monkeypatch.setattr("invoicing.services.corrections.billing_today", lambda: date(2026, 6, 1))
    settings.INVOICING_MAX_CORRECTION_DAYS = 365


def received(bodies: list[str]) -> list[Received]:
    return [Received(b, message_id=f"m-{i}", attributes=signed_attributes(b)) for i, b in enumerate(bodies)]


@pytest.mark.parametrize("another_agreement_first", [False, True], ids=["alone", "after-another"])
def test_a_payment_then_a_late_price_change_in_one_batch_keeps_the_payment(another_agreement_first):
    # given A's April invoice (1000), open
    projection_apply(event=agreement_event("agreement.created", "A", 1, start_date="2026-01-01"))
    invoices_run_inline(run_date=date(2026, 4, 1))
    april = Invoice.objects.get(agreement_id="A", period_start=date(2026, 4, 1))
    # when one receive batch holds its payment, then a price change to 1500 from April 1 (and,
    # maybe, before both, an event of another agreement: same handler as the price change)
    change = envelope("A", type="agreement.price_changed", version=2)
    change["data"] = {
        "agreement_id": "A",
        "amount_minor": 1500,
        "currency": "EUR",
        "effective_from": "2026-04-01",
    }
    bodies = [json.dumps(payment_succeeded_envelope(str(april.id), "pay-A", 1000)), json.dumps(change)]
    if another_agreement_first:
        bodies.insert(0, json.dumps(envelope("Z")))
    outcomes = process_batch(ConsumerRuntime("invoicing"), received(bodies))

    # then, as received: April is paid (1000) and a correction bills the 500 still owed; not
    # the paid invoice voided and reissued for 1500 (its payment refunded, the customer charged
    # the whole again)
    assert [o.result for o in outcomes] == [HANDLED] * len(bodies)
    documents = Invoice.objects.filter(agreement_id="A", period_start=date(2026, 4, 1)).order_by("revision")
    assert list(documents.values_list("status", "total_minor", "revision")) == [
        ("paid", 1000, 0),
        ("open", 500, 1),
    ]
