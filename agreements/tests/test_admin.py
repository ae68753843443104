"""Agreements in admin: created through the service; bad input is a form error; actions need permission."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User

from agreements.models import Agreement
from events.models import OutboxEvent

pytestmark = pytest.mark.django_db
ADD = "/admin/agreements/agreement/add/"
FORM = {
    "external_ref": "ADM-1",
    "customer_ref": "",
    "customer_name": "Ada",
    "customer_email": "ada@example.com",
    "description": "Plan",
    "amount_minor": "1999",
    "currency": "EUR",
    "interval": "month",
    "interval_count": "1",
    "start_date": "2026-01-31",
    "end_date": "",
}


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser("op", password="pw"))
    return client


def test_create_through_admin_records_the_event(operator):
    resp = operator.post(ADD, FORM)
    assert resp.status_code == 302
    agreement = Agreement.objects.get(external_ref="ADM-1")
    assert OutboxEvent.objects.get(aggregate_id=str(agreement.id)).type == "agreement.created"


def test_bad_input_is_a_form_error_and_nothing_is_saved(operator):
    resp = operator.post(ADD, FORM | {"currency": "XYZ", "amount_minor": "-1"})
    assert resp.status_code == 200
    page = resp.content.decode()
    assert "is not an ISO 4217 currency code" in page
    assert not Agreement.objects.exists() and not OutboxEvent.objects.exists()


def test_html_in_a_field_stays_inert(operator):
    operator.post(ADD, FORM | {"customer_name": "<script>alert(1)</script>"})
    page = operator.get("/admin/agreements/agreement/").content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_cancel_action_needs_its_permission(client, operator):
    operator.post(ADD, FORM)
    agreement = Agreement.objects.get()
    staff = User.objects.create_user("viewer", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_agreement"))
    client.force_login(staff)
    data = {"action": "cancel_now", "_selected_action": [str(agreement.pk)]}
    assert client.post("/admin/agreements/agreement/", data).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="cancel_agreement"))
    client.force_login(User.objects.get(pk=staff.pk))
    client.post("/admin/agreements/agreement/", data)
    agreement.refresh_from_db()
    assert agreement.status == "cancelled"
