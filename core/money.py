"""Money display: integer minor units with their currency, formatted for people.

A minor unit is ISO 4217's (``iso4217``): 1500 IDR minor units are IDR 15.00 and 1500 IQD ones
IQD 1.500. babel formats (symbol, grouping, the locale's pattern) but its CLDR digits are how many
decimals people are usually shown (IDR, HUF, COP, IQD ... 0), not what an amount counts: formatted
with them, 1500 minor units of rupiah read IDR 1,500, a hundred times the amount.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cache

import iso4217
from babel import Locale
from babel.numbers import format_currency, get_currency_precision


def minor_unit_exponent(currency: str) -> int | None:
    """Decimals of ``currency``'s minor unit per ISO 4217 (JPY 0, EUR 2, KWD 3); None for a code
    ISO gives none (XAU, a withdrawn code from EXTRA_CURRENCIES)."""
    try:
        return iso4217.Currency(currency).exponent
    except ValueError:
        return None


@cache
def _pattern(locale: str, decimals: int) -> str:
    """The locale's currency pattern showing exactly ``decimals`` decimals."""
    standard = Locale.parse(locale).currency_formats["standard"].pattern
    return re.sub(r"0\.0+", "0." + "0" * decimals if decimals else "0", standard)


def format_money(amount_minor: int, currency: str, locale: str = "en_US") -> str:
    decimals = minor_unit_exponent(currency)
    if decimals is None:
        try:
            decimals = get_currency_precision(currency)
        except Exception:  # noqa: BLE001 - unknown code: show the raw amount rather than fail a page
            return f"{amount_minor} {currency} (minor units)"
    amount = Decimal(amount_minor).scaleb(-decimals)
    return format_currency(amount, currency, _pattern(locale, decimals), locale, currency_digits=False)
