"""Payments in admin: attempts inline; "retry now" only with its permission (403 otherwise)."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission, User

from payments.models import Payment

pytestmark = pytest.mark.django_db
URL = "/admin/payments/payment/"


@pytest.fixture
def failed_payment() -> Payment:
    return Payment.objects.create(
        id=uuid.uuid4(),
        invoice_id="I-9",
        invoice_number="INV-9",
        customer_ref="c",
        customer_email="c@example.com",
        amount_minor=500,
        currency="EUR",
        status="failed",
        last_error_class="hard_decline",
    )


def test_retry_now_permission_matrix(client, failed_payment, django_capture_on_commit_callbacks):
    data = {"action": "retry_now", "_selected_action": [str(failed_payment.pk)]}
    # anonymous: to the login page
    assert "/admin/login/" in client.post(URL, data)["Location"]
    # staff who may only view: the action is hidden and posting it is refused
    staff = User.objects.create_user("viewer", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_payment"))
    client.force_login(staff)
    assert "retry_now" not in client.get(URL).content.decode()
    assert client.post(URL, data).status_code == 403
    failed_payment.refresh_from_db()
    assert failed_payment.status == "failed"
    # with the permission: a new attempt is scheduled (a new idempotency key), once
    staff.user_permissions.add(Permission.objects.get(codename="retry_payment"))
    client.force_login(User.objects.get(pk=staff.pk))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post(URL, data)
    failed_payment.refresh_from_db()
    assert failed_payment.status == "retry_scheduled" and failed_payment.dunning_step == 1
    assert len(callbacks) == 1
