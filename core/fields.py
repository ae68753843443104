"""What a valid value of a shared field is: one definition for services, forms, imports and contracts.

Each ``validate_*`` function raises ``django.core.exceptions.ValidationError`` with one message a
person can act on. The message describes the value, never the field's name: the caller knows which
field it checked and files the message under it (a form field, an import line's column). Values
are echoed through ``shown`` (escaped, shortened), so a message never carries a raw control
character or a megabyte of input into a log, a terminal or the database.

``is_email`` is ``validate_email`` as a predicate, for fastjsonschema's ``email`` format: a producer
cannot record, and a consumer does not accept, an address the services would refuse.

Free of imports from the domain apps (agreements, invoicing, payments), so any of them can use it.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

from babel.core import get_global
from babel.numbers import get_territory_currencies
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator

MAX_AMOUNT_MINOR = 10**13
EMAIL_MAX_LENGTH = 254  # RFC 5321's limit on a forward path; the column is as wide

# JSON Schema ``pattern`` for any string a consumer may store: PostgreSQL text and jsonb cannot
# hold U+0000. Written as an escape, so the pattern (and a refusal quoting it) stays printable.
NO_NUL_PATTERN = r"^[^\u0000]*$"

# One line of text: no control character at all (C0, DEL, C1), no line or paragraph separator,
# no lone surrogate (not Unicode; UTF-8 and therefore PostgreSQL cannot encode it).
_NOT_IN_A_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# Free text keeps tab and line breaks; other C0 controls are refused (U+0000 cannot be stored,
# the rest are invisible junk from a binary paste or a broken export).
_NOT_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")

# Django's rules for the address, but without its "localhost" exception: an agreement's customer
# is reached through a domain name, and the contracts always refused a dotless domain.
_email = EmailValidator(allowlist=[])


def shown(value: object, limit: int = 60) -> str:
    """``repr`` of ``value``, cut to about ``limit`` characters: safe to quote in a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# What PostgreSQL's text and jsonb cannot hold: NUL, and lone surrogates (UTF-8 cannot encode them).
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def storable(text: str, limit: int | None = None) -> str:
    """``text`` as the database can store it, for what the outside world says (an endpoint's
    error, an exception's text): each NUL or lone surrogate written as its escape (``\\u0000``),
    then cut to ``limit`` characters. Stored as it came, such a character fails the statement
    (psycopg2 raises ValueError before sending it) and takes the transaction with it."""
    if _UNSTORABLE.search(text) is not None:
        text = _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text if limit is None else text[:limit]


def _refuse_characters(value: str, bad: re.Pattern[str], allowed: str) -> None:
    found = bad.search(value)
    if found is None:
        return
    char, where = found.group(), found.start() + 1
    if char == "\x00":
        raise ValidationError(
            f"contains a NUL character (U+0000) at character {where}; it cannot be stored",
            code="nul_character",
        )
    if "\ud800" <= char <= "\udfff":
        raise ValidationError(
            f"is not valid Unicode (lone surrogate U+{ord(char):04X} at character {where})",
            code="surrogate",
        )
    raise ValidationError(
        f"contains the control character U+{ord(char):04X} at character {where}; {allowed}",
        code="control_character",
    )


def _text(value: object, max_length: int, required: bool) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"must be text, not {type(value).__name__}", code="type")
    if required and not value.strip():
        raise ValidationError("required", code="required")
    if len(value) > max_length:
        raise ValidationError(f"at most {max_length} characters (this has {len(value)})", code="max_length")
    return value


def validate_single_line(value: object, *, max_length: int, required: bool = True) -> None:
    """A name, a reference: one line of at most ``max_length`` characters, no control characters."""
    text = _text(value, max_length, required)
    _refuse_characters(text, _NOT_IN_A_LINE, "a single-line field takes no control characters")


def validate_free_text(value: object, *, max_length: int, required: bool = False) -> None:
    """A description: any text of at most ``max_length`` characters; of the control characters
    only tab, line feed and carriage return."""
    text = _text(value, max_length, required)
    _refuse_characters(text, _NOT_IN_TEXT, "only tab, line feed and carriage return are allowed")


def validate_email(value: object) -> None:
    """An e-mail address with a domain name (``ada@example.com``; not ``bob@localhost``)."""
    text = _text(value, EMAIL_MAX_LENGTH, required=True)
    _refuse_characters(text, _NOT_IN_A_LINE, "an e-mail address takes no control characters")
    if not _is_address(text):
        raise ValidationError(
            f"{shown(text)} is not an e-mail address with a domain name (e.g. ada@example.com)",
            code="invalid_email",
        )


@lru_cache(maxsize=8192)
def _is_address(text: str) -> bool:
    # Django's validator is slow (lazy messages, IDNA); an import checks each address twice
    # (the service, then the event's contract), so recent answers are kept.
    try:
        _email(text)
    except ValidationError:
        return False
    return True


def is_email(value: object) -> bool:
    """``validate_email`` as a predicate (fastjsonschema's custom ``format`` API)."""
    try:
        validate_email(value)
    except ValidationError:
        return False
    return True


@cache
def active_currencies() -> frozenset[str]:
    """ISO 4217 codes that are legal tender in some territory today, per babel's CLDR data.

    Leaves out withdrawn currencies (DEM, FRF), funds and units (CLF, XAU) and test codes (XTS,
    XXX). Computed once per process: the list changes with a babel upgrade, not during a run."""
    territories = get_global("territory_currencies")
    return frozenset(code for t in territories for code in get_territory_currencies(t, tender=True))


def validate_currency(value: object) -> None:
    """An active ISO 4217 code in upper case (``EUR``), or one of ``settings.EXTRA_CURRENCIES``.

    Callers that take input from people upper-case it first; this does not guess."""
    if (
        not isinstance(value, str)
        or not re.fullmatch(r"[A-Z]{3}", value)
        or (value not in active_currencies() and value not in settings.EXTRA_CURRENCIES)
    ):
        raise ValidationError(
            f"{shown(value)} is not an ISO 4217 currency code in use today (e.g. EUR, USD)", code="currency"
        )


def validate_amount_minor(value: object) -> None:
    """A positive whole number of minor units (cents), at most ``MAX_AMOUNT_MINOR``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("must be a whole number of minor units (e.g. 1999 for 19.99)", code="type")
    if not 0 < value <= MAX_AMOUNT_MINOR:
        raise ValidationError(f"must be positive and at most {MAX_AMOUNT_MINOR}", code="range")
