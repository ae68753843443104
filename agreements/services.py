"""Use cases of the agreements context. Every change records its event in the same transaction."""

from __future__ import annotations

import dataclasses
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from core import fields
from core.calendar import INTERVALS, billing_today, next_period_start
from events import contracts
from events.publishing import record_change, record_event

from .models import Agreement

# An agreement's fields as people see and type them (the admin form, the import's columns).
FIELDS = (
    "external_ref",
    "customer_ref",
    "customer_name",
    "customer_email",
    "description",
    "amount_minor",
    "currency",
    "interval",
    "interval_count",
    "start_date",
    "end_date",
)


@dataclass(frozen=True)
class AgreementInput:
    external_ref: str
    customer_name: str
    customer_email: str
    amount_minor: int
    currency: str
    interval: str
    start_date: date
    interval_count: int = 1
    description: str = ""
    end_date: date | None = None
    customer_ref: str = ""


@dataclass(frozen=True)
class CheckedInput(AgreementInput):
    """An AgreementInput already found valid (made by the import's ``row_to_input`` after
    ``agreement_errors`` found nothing, and passed to ``vouch``): ``agreement_validate`` does not
    check it twice. What is vouched for is the values, not the type: an input made from it with
    other values (``dataclasses.replace``) is checked like any other."""


# The inputs found valid, by value (an equal input is as valid); gone with the inputs themselves.
_vouched: weakref.WeakSet[AgreementInput] = weakref.WeakSet()


def vouch(data: CheckedInput) -> CheckedInput:
    """Record that ``data``'s values passed ``agreement_errors`` (call only right after)."""
    _vouched.add(data)
    return data


def _max_length(field: str) -> int:
    # The column's width is the one definition of how long a value may be.
    return int(Agreement._meta.get_field(field).max_length)  # type: ignore[arg-type]


def _validate_interval(value: object) -> None:
    if value not in INTERVALS:
        raise ValidationError(f"must be one of {', '.join(INTERVALS)}")


def _validate_interval_count(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ValidationError("must be a whole number from 1 to 1000")


def _validate_date(value: object, *, required: bool = True) -> None:
    if value is None and not required:
        return
    # A datetime is a date too, but cannot be compared with one (end_date < start_date).
    if not isinstance(value, date) or isinstance(value, datetime):
        raise ValidationError("must be a date (YYYY-MM-DD)")


FIELD_CHECKS: dict[str, Callable[[Any], None]] = {
    "external_ref": partial(fields.validate_single_line, max_length=_max_length("external_ref")),
    "customer_ref": partial(
        fields.validate_single_line, max_length=_max_length("customer_ref"), required=False
    ),
    "customer_name": partial(fields.validate_single_line, max_length=_max_length("customer_name")),
    "customer_email": fields.validate_email,
    "description": partial(fields.validate_free_text, max_length=_max_length("description")),
    "amount_minor": fields.validate_amount_minor,
    "currency": fields.validate_currency,
    "interval": _validate_interval,
    "interval_count": _validate_interval_count,
    "start_date": _validate_date,
    "end_date": partial(_validate_date, required=False),
}


def agreement_errors(values: Mapping[str, Any]) -> dict[str, list[str]]:
    """The problems of each field in ``values`` (AgreementInput's field names), one list per bad field.

    Checks only the fields given, so a form or an import line that could not parse some fields
    still learns what is wrong with the others. Never raises for any value; reads no database."""
    errors: dict[str, list[str]] = {}
    for name, value in values.items():
        check = FIELD_CHECKS.get(name)
        if check is None:
            continue
        try:
            check(value)
        except ValidationError as exc:
            errors[name] = exc.messages
    start, end = values.get("start_date"), values.get("end_date")
    if "start_date" not in errors and "end_date" not in errors and end is not None and start is not None:
        if end < start:
            errors["end_date"] = ["must not be before start_date"]
    return errors


def agreement_validate(data: AgreementInput) -> None:
    """Raise ValidationError with one message per bad field (nothing is saved)."""
    if data in _vouched:
        return
    errors = agreement_errors({f.name: getattr(data, f.name) for f in dataclasses.fields(data)})
    if errors:
        raise ValidationError(errors)


def event_data(a: Agreement | Any) -> dict[str, Any]:
    """``agreement.created``'s data for ``a`` (an Agreement, or anything with its attributes): the
    contract's newest version (2, naming the agreement's own ``external_ref``), which the outbox
    records. The single path (``agreement_create``) and the import (``bulk``) both use it."""
    return {
        "agreement_id": str(a.id),
        "external_ref": a.external_ref,
        "customer": {"external_ref": a.customer_ref, "name": a.customer_name, "email": a.customer_email},
        "description": a.description,
        "amount_minor": a.amount_minor,
        "currency": a.currency,
        "interval": a.interval,
        "interval_count": a.interval_count,
        "start_date": a.start_date.isoformat(),
        "end_date": a.end_date.isoformat() if a.end_date else None,
        "status": a.status,
    }


def build_agreement(data: AgreementInput) -> Agreement:
    """The new (unsaved) agreement ``data`` describes: active, at version 1, with a new id."""
    return Agreement(**new_agreement_values(data))


def new_agreement_values(data: AgreementInput) -> dict[str, Any]:
    """The field values of the new agreement ``data`` describes (``build_agreement``'s)."""
    return dict(
        id=uuid.uuid4(),
        external_ref=data.external_ref,
        customer_ref=data.customer_ref or data.external_ref,
        customer_name=data.customer_name,
        customer_email=data.customer_email,
        description=data.description,
        amount_minor=data.amount_minor,
        currency=data.currency,
        price_effective_from=data.start_date,
        interval=data.interval,
        interval_count=data.interval_count,
        start_date=data.start_date,
        end_date=data.end_date,
        status=Agreement.Status.ACTIVE,
        aggregate_version=1,
    )


@transaction.atomic
def agreement_create(*, data: AgreementInput) -> Agreement:
    """Create an agreement and record ``agreement.created`` (aggregate version 1). Raises
    ValidationError."""
    agreement_validate(data)
    agreement = build_agreement(data)
    agreement.full_clean(exclude=["id"], validate_unique=True)
    agreement.save(force_insert=True)
    record_event(
        sender=Agreement,
        type=contracts.AGREEMENT_CREATED,
        aggregate_id=str(agreement.id),
        aggregate_version=1,
        data=event_data(agreement),
    )
    return agreement


def _locked(agreement_id: uuid.UUID | str) -> Agreement:
    return Agreement.objects.select_for_update().get(pk=agreement_id)


def _bump(a: Agreement, event_type: str, data: dict[str, Any]) -> Agreement:
    record_change(sender=Agreement, obj=a, type=event_type, data=data)
    return a


def _require(a: Agreement, *allowed: str, action: str) -> None:
    if a.status not in allowed:
        raise ValidationError(f"cannot {action} an agreement that is {a.status}")


def agreement_change_price_validate(*, agreement: Agreement, amount_minor: object) -> None:
    """Raise ValidationError if ``agreement`` cannot take this price (reads, saves nothing).

    A closed agreement is a non-field error; a bad amount is filed under ``amount_minor``."""
    _require(agreement, Agreement.Status.ACTIVE, Agreement.Status.PAUSED, action="change the price of")
    try:
        fields.validate_amount_minor(amount_minor)
    except ValidationError as exc:
        raise ValidationError({"amount_minor": exc.messages}) from None


@transaction.atomic
def agreement_change_price(
    *, agreement_id: uuid.UUID | str, amount_minor: int, today: date | None = None
) -> Agreement:
    """New price from the next period on; records ``agreement.price_changed``."""
    a = _locked(agreement_id)
    agreement_change_price_validate(agreement=a, amount_minor=amount_minor)
    today = today or billing_today()
    effective = next_period_start(a.start_date, a.interval, a.interval_count, today)
    a.amount_minor = amount_minor
    a.price_effective_from = effective
    return _bump(
        a,
        contracts.AGREEMENT_PRICE_CHANGED,
        {
            "agreement_id": str(a.id),
            "amount_minor": amount_minor,
            "currency": a.currency,
            "effective_from": effective.isoformat(),
        },
    )


@transaction.atomic
def agreement_pause(*, agreement_id: uuid.UUID | str, from_date: date | None = None) -> Agreement:
    """Stop billing periods that start from ``from_date`` (default today); ``agreement.paused``."""
    a = _locked(agreement_id)
    _require(a, Agreement.Status.ACTIVE, action="pause")
    from_date = from_date or billing_today()
    a.status = Agreement.Status.PAUSED
    a.paused_from = from_date
    return _bump(
        a, contracts.AGREEMENT_PAUSED, {"agreement_id": str(a.id), "paused_from": from_date.isoformat()}
    )


@transaction.atomic
def agreement_resume(*, agreement_id: uuid.UUID | str, from_date: date | None = None) -> Agreement:
    """Bill again periods that start from ``from_date`` (default today); ``agreement.resumed``."""
    a = _locked(agreement_id)
    _require(a, Agreement.Status.PAUSED, action="resume")
    from_date = from_date or billing_today()
    if a.paused_from and from_date < a.paused_from:
        raise ValidationError("cannot resume before the pause started")
    a.status = Agreement.Status.ACTIVE
    a.paused_from = None
    return _bump(
        a, contracts.AGREEMENT_RESUMED, {"agreement_id": str(a.id), "resumed_from": from_date.isoformat()}
    )


@transaction.atomic
def agreement_cancel(
    *, agreement_id: uuid.UUID | str, at_period_end: bool = False, today: date | None = None
) -> Agreement:
    """Cancel now (no period starting after today is billed) or at the end of the current period.

    Records ``agreement.cancelled`` with the effective date: periods starting on or after it
    are never billed."""
    a = _locked(agreement_id)
    _require(a, Agreement.Status.ACTIVE, Agreement.Status.PAUSED, action="cancel")
    today = today or billing_today()
    # "Now": the period that started today (or before) stays billable, whether or not
    # today's run already billed it; nothing that starts after today is billed.
    effective = (
        next_period_start(a.start_date, a.interval, a.interval_count, today)
        if at_period_end
        else max(today + timedelta(days=1), a.start_date)
    )
    a.status = Agreement.Status.CANCELLED
    a.cancel_effective_date = effective
    return _bump(
        a,
        contracts.AGREEMENT_CANCELLED,
        {"agreement_id": str(a.id), "effective_date": effective.isoformat(), "at_period_end": at_period_end},
    )
