"""The event contracts: every event type, its producer, aggregate and data schema.

This is the only thing producers and consumers share besides the envelope.
A producer cannot record data that does not fit its type's schema; a consumer
sends a message whose data does not fit to its DLQ. Changing a schema in an
incompatible way means a new ``schema_version`` (keep the old one registered
until no message of it can still be in flight or replayed). Producers record the
newest version of their type; consumers accept every registered one, so each
handler reads what a newer version added as optional (``agreement.created`` v2
added ``external_ref``: a v1 event of the store or of a replay has none).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import fastjsonschema

from core import fields

from . import topology

# --- event type names (constants in one place) ----------------------------
AGREEMENT_CREATED = "agreement.created"
AGREEMENT_PRICE_CHANGED = "agreement.price_changed"
AGREEMENT_PAUSED = "agreement.paused"
AGREEMENT_RESUMED = "agreement.resumed"
AGREEMENT_CANCELLED = "agreement.cancelled"
INVOICE_ISSUED = "invoice.issued"
INVOICE_PAID = "invoice.paid"
INVOICE_VOIDED = "invoice.voided"
INVOICE_MARKED_UNCOLLECTIBLE = "invoice.marked_uncollectible"
CREDIT_NOTE_ISSUED = "credit_note.issued"
PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"
PAYMENT_CANCELLED = "payment.cancelled"
PAYMENT_REFUNDED = "payment.refunded"
ALERT_RESOLVED = "alert.resolved"
ALERT_DELIVERY_GAP = "alert.delivery_gap"


class ContractError(ValueError):
    """An event does not fit its contract (unknown type/version, data off-schema)."""


@dataclass(frozen=True)
class EventType:
    name: str
    producer: str  # the producing context; its events go to that topic
    aggregate_type: str
    schemas: dict[int, dict[str, Any]]  # schema_version -> JSON Schema of ``data``

    @property
    def schema_version(self) -> int:
        """The version producers write now."""
        return max(self.schemas)

    @cached_property
    def _validators(self) -> dict[int, Any]:
        # Compiled once: validation sits on the hot path of every domain write. "email" is the
        # services' own rule (core/fields.py), so the two can never disagree about an address.
        return {
            v: fastjsonschema.compile(s, formats={"email": fields.is_email}) for v, s in self.schemas.items()
        }

    def validate(self, data: Any, schema_version: int | None = None) -> None:
        """Raise ContractError with a readable reason if ``data`` does not fit."""
        version = self.schema_version if schema_version is None else schema_version
        validator = self._validators.get(version)
        if validator is None:
            raise ContractError(
                f"{self.name}: unknown schema_version {version!r} (known: {sorted(self.schemas)})"
            )
        try:
            validator(data)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise ContractError(f"{self.name} v{version}: {exc.message}") from None


REGISTRY: dict[str, EventType] = {}


def register(event_type: EventType) -> EventType:
    if event_type.producer not in topology.TOPICS:
        raise ValueError(f"{event_type.name}: producer {event_type.producer!r} has no topic")
    REGISTRY[event_type.name] = event_type
    return event_type


def get(name: str) -> EventType:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ContractError(f"unknown event type {name!r}") from None


# --- reusable schema parts ------------------------------------------------
# Every string a consumer may store: PostgreSQL text and jsonb cannot hold U+0000, so an event
# carrying one is refused here (poison, with this reason) instead of failing in a handler's INSERT.
TEXT = {"type": "string", "pattern": fields.NO_NUL_PATTERN}
ID = {**TEXT, "minLength": 1, "maxLength": 64}
DATE = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
# A date or null, in one schema rather than anyOf: fastjsonschema tries anyOf's branches by raising,
# which cost every agreement without an end date an exception (1.7 us of its 8 us check), and a
# refusal said only "cannot be validated by any definition". "format" and "pattern" bind strings only.
DATE_OR_NULL = {**DATE, "type": ["string", "null"]}
DATETIME = {"type": "string", "format": "date-time", "minLength": 20, "maxLength": 40}
MONEY = {"type": "integer", "minimum": 1, "maximum": 10**13}
CURRENCY = {"type": "string", "pattern": "^[A-Z]{3}$"}
# An external reference (an upstream system's id for an agreement or a customer).
REF = {**TEXT, "minLength": 1, "maxLength": 100}
CUSTOMER = {
    "type": "object",
    "required": ["external_ref", "name", "email"],
    "properties": {
        "external_ref": REF,
        "name": {**TEXT, "minLength": 1, "maxLength": 200},
        "email": {"type": "string", "format": "email", "maxLength": fields.EMAIL_MAX_LENGTH},
    },
    "additionalProperties": False,
}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
        "additionalProperties": False,
    }


# --- agreements -------------------------------------------------------------
_AGREEMENT_CREATED_V1 = {
    "agreement_id": ID,
    "customer": CUSTOMER,
    "description": {**TEXT, "maxLength": 500},
    "amount_minor": MONEY,
    "currency": CURRENCY,
    "interval": {"enum": ["day", "week", "month", "year"]},
    "interval_count": {"type": "integer", "minimum": 1, "maximum": 1000},
    "start_date": DATE,
    "end_date": DATE_OR_NULL,
    "status": {"enum": ["active", "paused", "cancelled", "ended"]},
}
register(
    EventType(
        AGREEMENT_CREATED,
        topology.AGREEMENTS,
        "agreement",
        {
            # v1: what the agreements context recorded until it named the agreement itself. Kept:
            # the event store holds v1 events, and their replays and backfills are still v1.
            1: _obj(_AGREEMENT_CREATED_V1),
            # v2 adds the agreement's own ``external_ref`` (the upstream system's id, which
            # operators know it by; ``customer.external_ref`` is the customer's).
            2: _obj({**_AGREEMENT_CREATED_V1, "external_ref": REF}),
        },
    )
)
register(
    EventType(
        AGREEMENT_PRICE_CHANGED,
        topology.AGREEMENTS,
        "agreement",
        {1: _obj({"agreement_id": ID, "amount_minor": MONEY, "currency": CURRENCY, "effective_from": DATE})},
    )
)
register(
    EventType(
        AGREEMENT_PAUSED,
        topology.AGREEMENTS,
        "agreement",
        {1: _obj({"agreement_id": ID, "paused_from": DATE})},
    )
)
register(
    EventType(
        AGREEMENT_RESUMED,
        topology.AGREEMENTS,
        "agreement",
        {1: _obj({"agreement_id": ID, "resumed_from": DATE})},
    )
)
register(
    EventType(
        AGREEMENT_CANCELLED,
        topology.AGREEMENTS,
        "agreement",
        {1: _obj({"agreement_id": ID, "effective_date": DATE, "at_period_end": {"type": "boolean"}})},
    )
)

# --- invoicing --------------------------------------------------------------
register(
    EventType(
        INVOICE_ISSUED,
        topology.INVOICING,
        "invoice",
        {
            1: _obj(
                {
                    "invoice_id": ID,
                    "number": {**TEXT, "minLength": 1, "maxLength": 40},
                    "agreement_id": ID,
                    "customer": CUSTOMER,
                    "period_start": DATE,
                    "period_end": DATE,
                    "total_minor": MONEY,
                    "currency": CURRENCY,
                    "due_date": DATE,
                }
            )
        },
    )
)
register(
    EventType(
        INVOICE_PAID,
        topology.INVOICING,
        "invoice",
        {1: _obj({"invoice_id": ID, "payment_id": ID, "paid_at": DATETIME})},
    )
)
register(
    EventType(
        INVOICE_VOIDED,
        topology.INVOICING,
        "invoice",
        {1: _obj({"invoice_id": ID, "reason": {**TEXT, "maxLength": 500}})},
    )
)
register(
    EventType(
        INVOICE_MARKED_UNCOLLECTIBLE,
        topology.INVOICING,
        "invoice",
        {1: _obj({"invoice_id": ID, "payment_id": ID, "reason": {**TEXT, "maxLength": 500}})},
    )
)

register(
    EventType(
        CREDIT_NOTE_ISSUED,
        topology.INVOICING,
        "credit_note",
        {
            1: _obj(
                {
                    "credit_note_id": ID,
                    "number": {"type": "string", "minLength": 1, "maxLength": 40},
                    "invoice_id": ID,
                    "agreement_id": ID,
                    "period_start": DATE,
                    "total_minor": MONEY,
                    "currency": CURRENCY,
                    "reason": {"type": "string", "maxLength": 500},
                }
            )
        },
    )
)

# --- payments ---------------------------------------------------------------
_PAYMENT = {"payment_id": ID, "invoice_id": ID, "amount_minor": MONEY, "currency": CURRENCY}
register(
    EventType(
        PAYMENT_SUCCEEDED,
        topology.PAYMENTS,
        "payment",
        {1: _obj({**_PAYMENT, "gateway_reference": {**TEXT, "maxLength": 100}})},
    )
)
register(
    EventType(
        PAYMENT_FAILED,
        topology.PAYMENTS,
        "payment",
        {
            1: _obj(
                {
                    **_PAYMENT,
                    "final": {"type": "boolean"},
                    "error_class": {"enum": ["hard_decline", "soft_decline", "transient"]},
                    "error_message": {**TEXT, "maxLength": 1000},
                    "attempts": {"type": "integer", "minimum": 0},
                }
            )
        },
    )
)

register(
    EventType(
        PAYMENT_CANCELLED,
        topology.PAYMENTS,
        "payment",
        {1: _obj({**_PAYMENT, "reason": {"type": "string", "maxLength": 500}})},
    )
)
register(
    EventType(
        PAYMENT_REFUNDED,
        topology.PAYMENTS,
        "payment",
        {
            1: _obj(
                {
                    **_PAYMENT,
                    "refund_id": ID,
                    "refunded_minor": MONEY,
                    "gateway_reference": {"type": "string", "maxLength": 100},
                    "reason": {"type": "string", "maxLength": 500},
                }
            )
        },
    )
)

# --- alerts (monitoring, final payment failures) ---------------------------
ALERT_DATA = _obj(
    {
        "check": {**TEXT, "minLength": 1, "maxLength": 100},
        "severity": {"enum": ["info", "warning", "critical"]},
        "summary": {**TEXT, "maxLength": 1000},
        "details": {"type": "object"},
    }
)
ALERT_TYPES = (
    "alert.payment_failed",
    "alert.charge_on_closed_invoice",
    "alert.charge_on_earlier_key",
    "alert.refund_failed",
    "alert.daily_run_failed",
    "alert.daily_run_stuck",
    "alert.dlq_not_empty",
    "alert.queues_missing",
    "alert.queue_message_too_old",
    "alert.outbox_lagging",
    "alert.daily_run_missed",
    "alert.payment_failure_rate",
    "alert.charges_unsent",
    "alert.charges_outcome_unknown",
    ALERT_DELIVERY_GAP,
    ALERT_RESOLVED,
)
for _name in ALERT_TYPES:
    register(EventType(_name, topology.ALERTS, "alert", {1: ALERT_DATA}))
