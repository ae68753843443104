"""Agreements in admin: created through the service; bad input is a form error; actions need permission."""

from __future__ import annotations

import json

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


def test_the_event_of_an_admin_create_names_the_agreement_and_its_customer(operator):
    # when an operator creates an agreement for a customer known by another ref
    resp = operator.post(ADD, FORM | {"external_ref": "SUB-1001", "customer_ref": "CUS-77"})
    assert resp.status_code == 302

    # then its agreement.created is version 2, naming the agreement and the customer apart
    agreement = Agreement.objects.get(external_ref="SUB-1001")
    event = OutboxEvent.objects.get(aggregate_id=str(agreement.id))
    assert (event.type, event.schema_version) == ("agreement.created", 2)
    assert event.data["external_ref"] == "SUB-1001"
    assert event.data["customer"]["external_ref"] == "CUS-77"
    published = json.loads(event.message_body())  # the envelope the relay sends
    assert (published["schema_version"], published["data"]["external_ref"]) == (2, "SUB-1001")


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


def change_url(agreement: Agreement) -> str:
    return f"/admin/agreements/agreement/{agreement.pk}/change/"


def form_errors(resp) -> dict[str, list[str]]:
    assert resp.status_code == 200
    page = resp.content.decode()
    assert "is violated" not in page and "agreement_amount_positive" not in page
    return {k: list(v) for k, v in resp.context["adminform"].form.errors.items()}


def test_an_email_the_contract_refuses_is_a_form_error_not_a_500(operator):
    resp = operator.post(ADD, FORM | {"customer_email": "bob@localhost"})
    assert form_errors(resp) == {
        "customer_email": [
            "'bob@localhost' is not an e-mail address with a domain name (e.g. ada@example.com)"
        ]
    }
    assert not Agreement.objects.exists() and not OutboxEvent.objects.exists()


def test_several_bad_fields_get_one_error_each_in_the_services_words(operator):
    # given a form where every field the service checks is wrong in its own way
    bad = {
        "external_ref": "ADM\x00-1",
        "customer_name": "Ada\nLovelace",
        "customer_email": "bob@localhost",
        "description": "bell\x07",
        "amount_minor": "-1",
        "currency": "DEM",
        "interval_count": "0",
        "end_date": "2025-01-01",
    }
    # when
    errors = form_errors(operator.post(ADD, FORM | bad))
    # then each has exactly one message, the service's, and nothing is saved
    assert sorted(errors) == sorted(bad)
    assert all(len(messages) == 1 for messages in errors.values())
    assert errors["amount_minor"] == ["must be positive and at most 10000000000000"]
    assert errors["interval_count"] == ["must be a whole number from 1 to 1000"]
    assert errors["end_date"] == ["must not be before start_date"]
    assert "NUL character" in errors["external_ref"][0]
    assert "in use today" in errors["currency"][0]
    assert not Agreement.objects.exists() and not OutboxEvent.objects.exists()


def test_a_field_that_does_not_parse_does_not_hide_the_others(operator):
    errors = form_errors(
        operator.post(ADD, FORM | {"amount_minor": "ten", "customer_email": "bob@localhost"})
    )
    assert errors["amount_minor"] == ["Enter a whole number."]
    assert "is not an e-mail address" in errors["customer_email"][0]


def test_lower_case_currency_is_upper_cased_as_the_import_does(operator):
    assert operator.post(ADD, FORM | {"currency": " eur "}).status_code == 302
    assert Agreement.objects.get().currency == "EUR"


@pytest.mark.parametrize(
    "amount, message",
    [
        (str(10**13 + 1), "must be positive and at most 10000000000000"),
        ("-1", "must be positive and at most 10000000000000"),
        ("0", "must be positive and at most 10000000000000"),
        ("9" * 40, "must be positive and at most 10000000000000"),
    ],
)
def test_a_bad_new_price_is_a_form_error(operator, amount, message):
    operator.post(ADD, FORM)
    agreement = Agreement.objects.get()
    errors = form_errors(operator.post(change_url(agreement), {"amount_minor": amount}))
    assert errors == {"amount_minor": [message]}
    agreement.refresh_from_db()
    assert agreement.amount_minor == 1999 and agreement.aggregate_version == 1


def test_changing_the_price_of_a_cancelled_agreement_is_a_form_error(operator):
    operator.post(ADD, FORM)
    agreement = Agreement.objects.get()
    operator.post(
        "/admin/agreements/agreement/", {"action": "cancel_now", "_selected_action": [agreement.pk]}
    )
    errors = form_errors(operator.post(change_url(agreement), {"amount_minor": "2500"}))
    assert errors == {"__all__": ["cannot change the price of an agreement that is cancelled"]}
    agreement.refresh_from_db()
    assert (agreement.status, agreement.amount_minor) == ("cancelled", 1999)


def test_a_good_new_price_still_goes_through_the_service(operator):
    operator.post(ADD, FORM)
    agreement = Agreement.objects.get()
    assert operator.post(change_url(agreement), {"amount_minor": "2500"}).status_code == 302
    agreement.refresh_from_db()
    assert (agreement.amount_minor, agreement.aggregate_version) == (2500, 2)
    assert OutboxEvent.objects.filter(type="agreement.price_changed").count() == 1
