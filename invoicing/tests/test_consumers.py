"""invoicing's consumer takes both versions of ``agreement.created``: v2 names the agreement
(its external ref), v1 (the event store's, replays, backfills) does not; a v2 seen later fills
what a v1 left blank, in either order, alone or in one receive batch."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from events.consuming.batch import Received, process_batch
from events.consuming.pull import pull_once
from events.consuming.runtime import DUPLICATE, HANDLED, POISON, ConsumerRuntime
from events.models import ConsumerFailure, OutboxEvent
from events.signing import signed_attributes
from invoicing.models import BillableAgreement
from tests.factories import agreement_data, deliver, envelope

pytestmark = pytest.mark.django_db


def created(agreement_id: str, schema_version: int, **data: object) -> str:
    return json.dumps(envelope(agreement_id, schema_version=schema_version, **data))


def row(agreement_id: str) -> BillableAgreement:
    return BillableAgreement.objects.get(agreement_id=agreement_id)


def test_a_v2_agreement_created_projects_the_agreements_external_ref():
    outcome = deliver("invoicing", created("A-1", 2, external_ref="SUB-1001"))
    assert outcome.result == HANDLED
    projected = row("A-1")
    assert projected.external_ref == "SUB-1001" and projected.customer_ref == "C-1"
    assert str(projected) == "SUB-1001 (Ada)"


def test_a_v1_event_still_projects_and_a_later_v2_fills_the_ref():
    # given an agreement.created recorded before v2 (say, replayed from the event store)
    v1 = created("A-1", 1)
    assert deliver("invoicing", v1).result == HANDLED
    before = row("A-1")
    assert before.created_seen and before.external_ref == "" and before.prices == [["2026-01-31", 1999, 1]]
    assert str(before) == "customer C-1 (Ada)"  # the customer's ref, saying so
    assert deliver("invoicing", v1).result == DUPLICATE

    # when a v2 of the same agreement arrives (another event id, the same aggregate version)
    assert deliver("invoicing", created("A-1", 2, external_ref="SUB-1001")).result == HANDLED

    # then the ref is filled and nothing else changes
    after = row("A-1")
    assert after.external_ref == "SUB-1001"
    assert (after.prices, after.customer, after.start_date, after.last_version) == (
        before.prices,
        before.customer,
        before.start_date,
        before.last_version,
    )


def test_a_v1_arriving_after_the_v2_leaves_the_ref_as_it_is():
    assert deliver("invoicing", created("A-1", 2, external_ref="SUB-1001")).result == HANDLED
    assert deliver("invoicing", created("A-1", 1)).result == HANDLED
    assert row("A-1").external_ref == "SUB-1001"


def test_one_receive_batch_with_both_versions_fills_the_ref_in_either_order():
    bodies = [
        created("B-1", 1),
        created("B-1", 2, external_ref="SUB-B1"),
        created("B-2", 2, external_ref="SUB-B2"),
        created("B-2", 1),
        created("B-3", 1),
    ]
    messages = [
        Received(b, message_id=f"m-{i}", attributes=signed_attributes(b)) for i, b in enumerate(bodies)
    ]

    outcomes = process_batch(ConsumerRuntime("invoicing"), messages)

    assert [o.result for o in outcomes] == [HANDLED] * 5
    refs = dict(BillableAgreement.objects.values_list("agreement_id", "external_ref"))
    assert refs == {"B-1": "SUB-B1", "B-2": "SUB-B2", "B-3": ""}


@pytest.mark.django_db(transaction=True)  # the command closes its connection when it ends
def test_a_v1_event_of_the_store_replayed_to_invoicing_still_projects(empty_queues):
    # given an agreement.created the store kept from before v2 (published yesterday)
    yesterday = timezone.now() - timedelta(days=1)
    OutboxEvent.objects.create(
        id=uuid.uuid4(),
        type="agreement.created",
        schema_version=1,
        occurred_at=yesterday,
        producer="agreements",
        aggregate_type="agreement",
        aggregate_id="R-1",
        aggregate_version=1,
        data=agreement_data("R-1", schema_version=1),
        published_at=yesterday,
        next_attempt_at=None,
    )

    # when an operator replays it to invoicing's queue and invoicing takes it
    call_command("events_replay", "--type", "agreement.created", "--to-queue", "invoicing")
    result = pull_once("invoicing", batch_size=10)

    # then it is handled as the v1 it is: projected, its agreement's ref unknown
    assert result.received == 1 and result.outcomes == {HANDLED: 1}
    projected = row("R-1")
    assert projected.created_seen and projected.external_ref == "" and str(projected) == "customer C-1 (Ada)"


@pytest.mark.parametrize(
    "body, reason",
    [
        (
            json.dumps(
                envelope("A-1", schema_version=2)
                | {"data": {k: v for k, v in envelope("A-1")["data"].items() if k != "external_ref"}}
            ),
            "agreement.created v2: data must contain",
        ),
        (created("A-1", 2, external_ref=""), "agreement.created v2: data.external_ref must be longer than"),
        (created("A-1", 2, external_ref="S" * 101), "data.external_ref must be shorter than or equal to 100"),
        (created("A-1", 2, external_ref="SUB\x00"), "data.external_ref must match pattern"),
        (created("A-1", 1, external_ref="SUB-1001"), "agreement.created v1: data must not contain"),
    ],
)
def test_the_contract_refuses_an_agreement_created_without_a_proper_ref(body, reason):
    outcome = deliver("invoicing", body, message_id="m-bad")
    assert outcome.result == POISON and reason in outcome.reason
    if "must contain" in reason:
        assert "external_ref" in outcome.reason
    assert not BillableAgreement.objects.exists()
    assert ConsumerFailure.objects.get(message_id="m-bad").poisoned


@pytest.mark.parametrize(
    ("end_date", "reason"),
    [
        (None, None),
        ("2027-11-30", None),
        ("2027-13-01", "agreement.created v2: data.end_date must be date"),
        ("30/11/2027", "agreement.created v2: data.end_date must match pattern"),
        (20271130, "agreement.created v2: data.end_date must be string or null"),
    ],
)
def test_an_end_date_is_a_date_or_null_and_a_bad_one_is_refused_with_its_reason(end_date, reason):
    outcome = deliver("invoicing", created("A-1", 2, end_date=end_date), message_id="m-end")
    if reason is None:
        assert outcome.result == HANDLED
        assert row("A-1").end_date == (end_date and date.fromisoformat(end_date))
    else:
        assert outcome.result == POISON and reason in outcome.reason, outcome.reason
        assert not BillableAgreement.objects.exists()
