"""Permission matrix for every sensitive operator action: anonymous, staff without the permission,
staff with it. Viewing is separate from acting; a forged POST without the permission is a 403."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from django.contrib.auth.models import Permission, User
from django.db import transaction

from agreements.models import Agreement
from agreements.services import AgreementInput, agreement_create
from events import contracts, topology
from events.publishing import NewEvent, record_events
from events.topology import aws
from invoicing.models import Invoice
from invoicing.services import invoices_run_inline, projection_apply
from invoicing.tests.factories import agreement_event
from payments.models import Payment
from tests.factories import agreement_data

pytestmark = pytest.mark.django_db(transaction=True)


def _event() -> str:
    with transaction.atomic():
        [e] = record_events(
            sender=None, events=[NewEvent(contracts.AGREEMENT_CREATED, "PM-1", 1, agreement_data("PM-1"))]
        )
    return str(e.id)


def _invoice() -> str:
    projection_apply(event=agreement_event("agreement.created", "PM-2", 1, start_date="2026-01-01"))
    invoices_run_inline(run_date=date(2026, 1, 1))
    return str(Invoice.objects.get().pk)


def _payment() -> str:
    return str(
        Payment.objects.create(
            id=uuid.uuid4(),
            invoice_id="PM-3",
            invoice_number="N",
            customer_ref="c",
            customer_email="c@example.com",
            amount_minor=1,
            currency="EUR",
            status="failed",
        ).pk
    )


def _agreement() -> str:
    return str(
        agreement_create(
            data=AgreementInput(
                external_ref="PM-4",
                customer_name="A",
                customer_email="a@example.com",
                amount_minor=1,
                currency="EUR",
                interval="month",
                start_date=date(2026, 1, 1),
            )
        ).pk
    )


def _replayed(pk: str) -> bool:
    attrs = aws.client("sqs").get_queue_attributes(
        QueueUrl=aws.queue_url(topology.event_queue_name("invoicing")),
        AttributeNames=["ApproximateNumberOfMessages"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) == 1


def _voided(pk: str) -> bool:
    return Invoice.objects.get(pk=pk).status == "void"


def _retried(pk: str) -> bool:
    return Payment.objects.get(pk=pk).status == "retry_scheduled"


def _status(status: str):
    return lambda pk: Agreement.objects.get(pk=pk).status == status


REPLAY_TO_INVOICING = {"confirm": "1", "target": "invoicing"}
ACTIONS = [
    # (changelist, action, object factory, view permission, action permission, extra POST, effect)
    ("/admin/events/outboxevent/", "replay_selected", _event, "view_outboxevent", "replay_event",
     REPLAY_TO_INVOICING, _replayed),
    ("/admin/invoicing/invoice/", "void_selected", _invoice, "view_invoice", "void_invoice", {}, _voided),
    ("/admin/payments/payment/", "retry_now", _payment, "view_payment", "retry_payment", {}, _retried),
    ("/admin/agreements/agreement/", "cancel_now", _agreement, "view_agreement", "cancel_agreement",
     {}, _status("cancelled")),
    ("/admin/agreements/agreement/", "pause", _agreement, "view_agreement", "cancel_agreement",
     {}, _status("paused")),
]  # fmt: skip


@pytest.mark.parametrize(
    "url, action, make, view_perm, action_perm, extra, done", ACTIONS, ids=[a[1] for a in ACTIONS]
)
def test_permission_matrix(client, url, action, make, view_perm, action_perm, extra, done, empty_queues):
    pk = make()
    data = {"action": action, "_selected_action": [pk], **extra}
    # anonymous: sent to the login page, nothing done
    resp = client.post(url, data)
    assert resp.status_code == 302 and "/admin/login/" in resp["Location"]
    # staff who may view: the action is not offered, and posting it is refused
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename=view_perm))
    client.force_login(user)
    page = client.get(url)
    assert page.status_code == 200 and f'value="{action}"' not in page.content.decode()
    assert client.post(url, data).status_code == 403
    assert not done(pk)
    # staff with the permission: offered, and it runs, with its effect
    user.user_permissions.add(Permission.objects.get(codename=action_perm))
    client.force_login(User.objects.get(pk=user.pk))
    assert f'value="{action}"' in client.get(url).content.decode()
    assert client.post(url, data).status_code in (200, 302)
    assert done(pk)
