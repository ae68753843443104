"""Money display: integer minor units with their currency, formatted for people."""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import format_currency, get_currency_precision


def format_money(amount_minor: int, currency: str, locale: str = "en_US") -> str:
    try:
        digits = get_currency_precision(currency)
    except Exception:  # noqa: BLE001 - unknown code: show the raw amount rather than fail a page
        return f"{amount_minor} {currency} (minor units)"
    return format_currency(Decimal(amount_minor).scaleb(-digits), currency, locale=locale)
