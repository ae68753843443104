"""Reads for the operators' pages: each consumer's last audit pass (one query per table)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count

from ..models import AlertState, DeliveryAudit, DeliveryResend
from .subscriptions import consumer_names


@dataclass(frozen=True)
class AuditSummary:
    consumer: str
    last_pass_at: datetime | None  # None: never audited
    last_pass_seconds: float
    watermark: datetime | None
    missing: int  # at the last pass
    resent: int  # by the last pass
    resent_pending: int  # re-sent and not accounted for yet
    gap_open: bool  # alert.delivery_gap raised and not resolved


def audit_summaries() -> list[AuditSummary]:
    """Every declared consumer's audit summary, in declaration order (never audited included)."""
    audits = {a.consumer: a for a in DeliveryAudit.objects.all()}
    gaps = set(
        AlertState.objects.filter(name__startswith="delivery_gap:", breached=True).values_list(
            "name", flat=True
        )
    )
    pending = dict(
        DeliveryResend.objects.values("consumer").annotate(n=Count("id")).values_list("consumer", "n")
    )
    out = []
    for name in consumer_names():
        a = audits.get(name)
        out.append(
            AuditSummary(
                consumer=name,
                last_pass_at=a.last_pass_at if a else None,
                last_pass_seconds=a.last_pass_seconds if a else 0.0,
                watermark=a.watermark if a else None,
                missing=a.missing if a else 0,
                resent=a.resent if a else 0,
                resent_pending=pending.get(name, 0),
                gap_open=f"delivery_gap:{name}" in gaps,
            )
        )
    return out
