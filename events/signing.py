"""Event authenticity: every published message carries an HMAC-SHA256 of its exact body.

The relay, replays, backfills and DLQ redrives send the envelope's canonical body (sorted keys,
compact separators) with two message attributes: ``signature`` (hex HMAC-SHA256 of the body's
UTF-8 bytes) and ``signature_key`` (the key id). Consumers accept a message only if its key id is
one of ``EVENT_SIGNING_KEYS`` (several may be current, for rotation) and the HMAC matches; anything
else is poison with the reason. Retiring a key is removing it from the setting.

Rotation: add the new key to every consumer's ``EVENT_SIGNING_KEYS`` first, then switch the
producers' ``EVENT_SIGNING_KEY_ID`` to it, then remove the old key once no message signed with it
can still be in a queue (the queue's retention) or needs redriving.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from django.conf import settings

SIGNATURE = "signature"
SIGNATURE_KEY = "signature_key"


class SignatureError(ValueError):
    """The message is not signed by a current key: it must not be acted on."""


def _key(key_id: str) -> bytes | None:
    secret = settings.EVENT_SIGNING_KEYS.get(key_id)
    return secret.encode("utf-8") if secret else None


def signature(body: str | bytes, key_id: str | None = None) -> tuple[str, str]:
    """(key id, hex HMAC-SHA256 of ``body``) with the current signing key (or ``key_id``)."""
    key_id = key_id or settings.EVENT_SIGNING_KEY_ID
    secret = _key(key_id)
    if secret is None:
        raise SignatureError(f"EVENT_SIGNING_KEY_ID {key_id!r} is not in EVENT_SIGNING_KEYS")
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return key_id, hmac.new(secret, raw, hashlib.sha256).hexdigest()


def signed_attributes(body: str | bytes) -> dict[str, dict[str, str]]:
    """The two SNS/SQS message attributes that authenticate ``body``."""
    key_id, digest = signature(body)
    return {
        SIGNATURE: {"DataType": "String", "StringValue": digest},
        SIGNATURE_KEY: {"DataType": "String", "StringValue": key_id},
    }


def verify(body: str | bytes, attributes: dict[str, Any] | None) -> str:
    """Return the key id that signed ``body``; raise SignatureError saying why it is not trusted."""
    attributes = attributes or {}
    given = _string(attributes.get(SIGNATURE))
    key_id = _string(attributes.get(SIGNATURE_KEY))
    if not given or not key_id:
        raise SignatureError("unsigned message: no signature/signature_key attributes")
    secret = _key(key_id)
    if secret is None:
        raise SignatureError(f"signed with an unknown or retired key {key_id[:40]!r}")
    raw = body.encode("utf-8") if isinstance(body, str) else body
    expected = hmac.new(secret, raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8")):  # bytes: any text compares
        raise SignatureError(f"bad signature for key {key_id[:40]!r}: the body was altered or forged")
    return key_id


def _string(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("StringValue")
    return value if isinstance(value, str) else ""
