"""Use cases of the agreements context. Every change records its event in the same transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from babel.numbers import list_currencies
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from billing_project.periods import INTERVALS, next_period_start
from events import contracts
from events.outbox import record_change, record_event

from .models import Agreement

KNOWN_CURRENCIES = frozenset(list_currencies())
MAX_AMOUNT_MINOR = 10**13


def billing_today() -> date:
    from zoneinfo import ZoneInfo

    from django.conf import settings

    return timezone.now().astimezone(ZoneInfo(settings.BILLING_TIME_ZONE)).date()


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


def agreement_validate(data: AgreementInput) -> None:
    """Raise ValidationError with one message per bad field (nothing is saved)."""
    errors: dict[str, list[str]] = {}

    def bad(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    if not data.external_ref or len(data.external_ref) > 100:
        bad("external_ref", "required, at most 100 characters")
    if not data.customer_name or len(data.customer_name) > 200:
        bad("customer_name", "required, at most 200 characters")
    try:
        validate_email(data.customer_email)
    except ValidationError:
        bad("customer_email", f"{data.customer_email!r} is not an e-mail address")
    if not isinstance(data.amount_minor, int) or isinstance(data.amount_minor, bool):
        bad("amount_minor", "must be a whole number of minor units (e.g. 1999 for 19.99)")
    elif not 0 < data.amount_minor <= MAX_AMOUNT_MINOR:
        bad("amount_minor", f"must be positive and at most {MAX_AMOUNT_MINOR}")
    if data.currency not in KNOWN_CURRENCIES:
        bad("currency", f"{data.currency!r} is not an ISO 4217 currency code (e.g. EUR, USD)")
    if data.interval not in INTERVALS:
        bad("interval", f"must be one of {', '.join(INTERVALS)}")
    if not isinstance(data.interval_count, int) or not 1 <= data.interval_count <= 1000:
        bad("interval_count", "must be a whole number from 1 to 1000")
    if data.end_date is not None and data.end_date < data.start_date:
        bad("end_date", "must not be before start_date")
    if len(data.description) > 500:
        bad("description", "at most 500 characters")
    if errors:
        raise ValidationError(errors)


def _event_data(a: Agreement) -> dict[str, Any]:
    return {
        "agreement_id": str(a.id),
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


@transaction.atomic
def agreement_create(*, data: AgreementInput) -> Agreement:
    """Create an agreement and record ``agreement.created`` (version 1). Raises ValidationError."""
    agreement_validate(data)
    agreement = Agreement(
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
        aggregate_version=1,
    )
    agreement.full_clean(exclude=["id"], validate_unique=True)
    agreement.save(force_insert=True)
    record_event(
        sender=Agreement,
        type=contracts.AGREEMENT_CREATED,
        aggregate_id=str(agreement.id),
        aggregate_version=1,
        data=_event_data(agreement),
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


@transaction.atomic
def agreement_change_price(
    *, agreement_id: uuid.UUID | str, amount_minor: int, today: date | None = None
) -> Agreement:
    """New price from the next period on; records ``agreement.price_changed``."""
    a = _locked(agreement_id)
    _require(a, Agreement.Status.ACTIVE, Agreement.Status.PAUSED, action="change the price of")
    if (
        isinstance(amount_minor, bool)
        or not isinstance(amount_minor, int)
        or not 0 < amount_minor <= MAX_AMOUNT_MINOR
    ):
        raise ValidationError({"amount_minor": [f"must be a positive whole number up to {MAX_AMOUNT_MINOR}"]})
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
