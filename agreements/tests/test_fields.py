"""One definition of a valid field: the service, the event contracts and the database agree on
e-mails, text and currencies; unstorable characters are a field error, legitimate text is kept."""

from __future__ import annotations

from datetime import date

import pytest
from django.core.exceptions import ValidationError

from agreements.models import Agreement
from agreements.services import AgreementInput, agreement_create
from events import contracts
from events.models import OutboxEvent

pytestmark = pytest.mark.django_db


def new(**overrides: object) -> AgreementInput:
    base: dict[str, object] = dict(
        external_ref="EXT-1",
        customer_name="Ada",
        customer_email="ada@example.com",
        amount_minor=1999,
        currency="EUR",
        interval="month",
        start_date=date(2026, 1, 31),
    )
    return AgreementInput(**(base | overrides))  # type: ignore[arg-type]


def contract_accepts_email(email: str) -> bool:
    data = {
        "agreement_id": "A-1",
        "external_ref": "EXT-1",
        "customer": {"external_ref": "C-1", "name": "Ada", "email": email},
        "description": "",
        "amount_minor": 1999,
        "currency": "EUR",
        "interval": "month",
        "interval_count": 1,
        "start_date": "2026-01-31",
        "end_date": None,
        "status": "active",
    }
    try:
        contracts.get(contracts.AGREEMENT_CREATED).validate(data)
    except contracts.ContractError:
        return False
    return True


@pytest.mark.parametrize(
    "email",
    [
        "ada@example.com",
        "o'brien+billing@mail.example.co.uk",
        "ada@bücher.example",
        "bob@localhost",
        "bob@example",
        "bob smith@example.com",
        "bob@@example.com",
        "bob@example.com\n",
        '"bob\x01"@example.com',
        "x" * 250 + "@example.com",
    ],
)
def test_service_and_contract_accept_exactly_the_same_emails(email):
    try:
        agreement_create(data=new(customer_email=email))
        service_accepts = True
    except ValidationError as exc:
        assert list(exc.message_dict) == ["customer_email"]
        service_accepts = False
    assert service_accepts == contract_accepts_email(email)
    assert OutboxEvent.objects.count() == Agreement.objects.count() == int(service_accepts)


def test_bob_at_localhost_is_a_field_error_not_a_contract_error_at_the_outbox():
    with pytest.raises(ValidationError) as exc:
        agreement_create(data=new(customer_email="bob@localhost"))
    assert exc.value.message_dict == {
        "customer_email": [
            "'bob@localhost' is not an e-mail address with a domain name (e.g. ada@example.com)"
        ]
    }
    assert not Agreement.objects.exists()


def test_legitimate_text_is_kept_as_typed():
    # given text that looks like escapes, quoting or markup, but is just text
    typed = dict(
        external_ref=r"REF\N-1 'quoted' \"x\"",
        customer_ref="\\N",
        customer_name=("Zoë 🙂 " + "ñ" * 200)[:200],
        customer_email="zoe@example.com",
        description='Line one\n\tindented "quote" \\N C:\\path\r\nemoji 👩‍👩‍👧 <b>not bold</b>',
    )
    assert len(typed["customer_name"]) == 200
    # when
    agreement = agreement_create(data=new(**typed))
    # then the database and the event hold exactly what was typed
    agreement.refresh_from_db()
    assert {k: getattr(agreement, k) for k in typed} == typed
    data = OutboxEvent.objects.get().data
    assert data["description"] == typed["description"]
    assert data["customer"] == {
        "external_ref": "\\N",
        "name": typed["customer_name"],
        "email": "zoe@example.com",
    }


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("customer_name", "Ada\x00Lovelace", "NUL character (U+0000) at character 4"),
        ("external_ref", "E\x00", "NUL character (U+0000) at character 2"),
        ("customer_ref", "\x00", "NUL character"),
        ("description", "plan\x00", "NUL character (U+0000) at character 5"),
        ("customer_email", "ada\x00@example.com", "NUL character"),
        ("description", "bell\x07", "U+0007 at character 5; only tab, line feed and carriage return"),
        ("description", "escape \x1b[31m red", "U+001B"),
        ("customer_name", "Ada\nLovelace", "U+000A at character 4; a single-line field"),
        ("customer_name", "Ada\tLovelace", "U+0009"),
        ("external_ref", "E-1\r", "U+000D"),
        ("customer_name", "Ada\x85", "U+0085"),
        ("customer_name", "Ada\u2028Lovelace", "U+2028"),
        ("customer_name", "Ada\ud800", "lone surrogate U+D800"),
        ("description", "x" * 501, "at most 500 characters"),
        ("customer_name", "x" * 201, "at most 200 characters"),
        ("customer_name", "   ", "required"),
    ],
)
def test_unstorable_or_control_characters_are_a_field_error(field, value, reason):
    with pytest.raises(ValidationError) as exc:
        agreement_create(data=new(**{field: value}))
    [message] = exc.value.message_dict[field]
    assert reason in message
    assert "\x00" not in message  # the value is quoted escaped, safe for a log or a terminal
    assert not Agreement.objects.exists() and not OutboxEvent.objects.exists()


@pytest.mark.parametrize(
    "path, value",
    [
        (("description",), "plan\x00"),
        (("customer", "name"), "Ada\x00"),
        (("customer", "external_ref"), "\x00"),
        (("agreement_id",), "A\x00"),
        (("external_ref",), "EXT\x00"),
    ],
)
def test_the_contract_refuses_nul_in_a_string_with_its_reason(path, value):
    # given agreement.created data forged with a NUL, which no handler could store
    data = {
        "agreement_id": "A-1",
        "external_ref": "EXT-1",
        "customer": {"external_ref": "C-1", "name": "Ada", "email": "ada@example.com"},
        "description": "Plan",
        "amount_minor": 1999,
        "currency": "EUR",
        "interval": "month",
        "interval_count": 1,
        "start_date": "2026-01-31",
        "end_date": None,
        "status": "active",
    }
    contracts.get(contracts.AGREEMENT_CREATED).validate(data)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    # when it is checked (a producer before recording it, a consumer before its handler: poison)
    with pytest.raises(contracts.ContractError) as exc:
        contracts.get(contracts.AGREEMENT_CREATED).validate(data)
    # then the reason names the field and the rule, and carries no NUL itself
    assert f"data.{'.'.join(path)} must match pattern ^[^\\u0000]*$" in str(exc.value)
    assert "\x00" not in str(exc.value)


@pytest.mark.parametrize("code", ["DEM", "FRF", "XXX", "XTS", "XAU", "CUC", "HRK", "eur", "EURO", ""])
def test_only_currencies_in_use_today(code):
    with pytest.raises(ValidationError) as exc:
        agreement_create(data=new(currency=code))
    assert "is not an ISO 4217 currency code in use today" in exc.value.message_dict["currency"][0]


@pytest.mark.parametrize("code", ["EUR", "USD", "GBP", "JPY", "CHF", "XOF", "XPF", "SLE"])
def test_currencies_in_use_are_accepted(code):
    assert agreement_create(data=new(currency=code)).currency == code


def test_extra_currencies_setting_widens_the_list(settings):
    with pytest.raises(ValidationError):
        agreement_create(data=new(currency="XAU"))
    settings.EXTRA_CURRENCIES = ["XAU"]
    assert agreement_create(data=new(currency="XAU")).currency == "XAU"
