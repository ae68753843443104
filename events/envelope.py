"""The event envelope, defined once: its fields and limits, how it is built and serialized (what
is signed, sent and stored), its size limit, and parsing a message body back into one.

Read by the outbox (both its row builders), the model's ``envelope()``, the admin, the parser and
the contract checks. A value that passes JSON parsing but not these types and limits (a month
13, a version beyond 64 bits, an id that is not a UUID, a NUL in a name) is ``Poison`` with its
reason, never an exception deeper in a consumer.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from django.utils.dateparse import parse_datetime

from . import contracts

INT64_MAX = 2**63 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Poison(ValueError):
    """The message can never be handled as it is: it goes to the DLQ with this reason."""


@dataclass(frozen=True)
class Field:
    name: str
    kind: type
    max_length: int = 0  # strings: at most this many characters (0: no limit here)
    minimum: int = 0  # integers
    maximum: int = INT64_MAX


FIELDS: tuple[Field, ...] = (
    Field("id", str, 36),
    Field("type", str, 100),
    Field("schema_version", int, minimum=1, maximum=32767),
    Field("occurred_at", str, 40),
    Field("producer", str, 50),
    Field("aggregate_type", str, 50),
    Field("aggregate_id", str, 64),
    Field("aggregate_version", int, minimum=0),
    Field("data", dict),
)
ENVELOPE_FIELDS: dict[str, type] = {f.name: f.kind for f in FIELDS}
NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
_NAME_SET = frozenset(NAMES)

# SNS and SQS accept 256 KiB per message including its attributes: keep headroom for them.
MAX_EVENT_BYTES = 240 * 1024


def build(**values: Any) -> dict[str, Any]:
    """An envelope from its field values (every field, nothing else), ready to serialize."""
    if values.keys() != _NAME_SET:
        missing = [n for n in NAMES if n not in values]
        raise TypeError(f"envelope fields missing {missing}, unknown {sorted(values.keys() - _NAME_SET)}")
    envelope = {n: values[n] for n in NAMES}
    envelope["id"] = str(envelope["id"])
    if isinstance(envelope["occurred_at"], datetime):
        envelope["occurred_at"] = envelope["occurred_at"].isoformat().replace("+00:00", "Z")
    return envelope


def serialize(envelope: dict[str, Any]) -> str:
    """The canonical body (sorted keys, compact, UTF-8): what is signed, sent and sized."""
    try:
        return orjson.dumps(envelope, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError as refused:
        # What orjson cannot write but the database gave back: an integer past 64 bits (jsonb
        # returns a float such as 1e20 as one) or nesting past its 254 levels. The standard
        # library writes the same JSON, which reads back as the number recorded. Not text that
        # is no UTF-8 (a lone surrogate): refused as orjson refused it.
        body = json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        try:
            body.encode("utf-8")
        except UnicodeEncodeError:
            raise refused from None
        return body


def check_size(body: str, event_type: str) -> None:
    """Refuse an event whose message would not fit SNS/SQS (contracts.ContractError)."""
    if len(body) * 4 > MAX_EVENT_BYTES and len(body.encode("utf-8")) > MAX_EVENT_BYTES:
        raise contracts.ContractError(
            f"{event_type}: envelope is {len(body.encode('utf-8'))} bytes, "
            f"over the {MAX_EVENT_BYTES}-byte limit"
        )


def _reject_constant(value: str) -> Any:
    raise ValueError(f"{value} is not valid JSON")


def parse_envelope(body: str | bytes) -> dict[str, Any]:
    """The envelope as a dict, or ``Poison`` saying exactly what is wrong."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Poison(f"body is not UTF-8: {exc}") from None
    try:
        envelope = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise Poison(f"body is not JSON: {str(exc)[:200]}") from None
    if not isinstance(envelope, dict):
        raise Poison(f"body is JSON {type(envelope).__name__}, not an object")
    missing = [f.name for f in FIELDS if f.name not in envelope]
    if missing:
        raise Poison(f"envelope lacks {missing}")
    for f in FIELDS:
        _check(f, envelope[f.name])
    try:
        uuid.UUID(envelope["id"])
    except ValueError:
        raise Poison(f"envelope id {envelope['id'][:80]!r} is not a UUID") from None
    try:
        occurred = parse_datetime(envelope["occurred_at"])
    except ValueError as exc:  # well-formed but impossible: month 13, hour 25...
        raise Poison(f"occurred_at {envelope['occurred_at'][:80]!r} is not a valid datetime: {exc}") from None
    if occurred is None:
        raise Poison(f"occurred_at {envelope['occurred_at'][:80]!r} is not an ISO 8601 datetime")
    if occurred.tzinfo is None:
        raise Poison(f"occurred_at {envelope['occurred_at'][:80]!r} has no time zone (use Z or +00:00)")
    return envelope


def _check(f: Field, value: Any) -> None:
    if not isinstance(value, f.kind) or (f.kind is int and isinstance(value, bool)):
        raise Poison(f"envelope field {f.name!r} must be {f.kind.__name__}, got {type(value).__name__}")
    if f.kind is int and not f.minimum <= value <= f.maximum:
        raise Poison(f"envelope field {f.name!r} must be from {f.minimum} to {f.maximum}, got {value}")
    if f.kind is str:
        if f.max_length and len(value) > f.max_length:
            raise Poison(f"envelope field {f.name!r} is longer than {f.max_length} characters")
        if not value and f.name != "occurred_at":
            raise Poison(f"envelope field {f.name!r} is empty")
        if _CONTROL.search(value):
            raise Poison(f"envelope field {f.name!r} contains control characters")


def check_contract(envelope: dict[str, Any]) -> contracts.EventType | None:
    """A known event type must come from its producer and be about its aggregate type.

    Returns the type's contract, or None for a type no contract declares (no handler can
    exist for it, so it is acknowledged as unhandled).
    """
    event_type = contracts.REGISTRY.get(envelope["type"])
    if event_type is None:
        return None
    if envelope["producer"] != event_type.producer or envelope["aggregate_type"] != event_type.aggregate_type:
        raise Poison(
            f"{event_type.name} is produced by {event_type.producer!r} about a "
            f"{event_type.aggregate_type!r}; this envelope says producer {envelope['producer'][:50]!r}, "
            f"aggregate_type {envelope['aggregate_type'][:50]!r}"
        )
    return event_type


def payload_hash(envelope: dict[str, Any]) -> str:
    canonical = json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
