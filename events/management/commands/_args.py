"""Argument parsing shared by the operator commands: clear errors a person can act on."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_when(value: str, option: str) -> datetime:
    """ISO date (midnight UTC) or ISO datetime (naive = UTC)."""
    dt = parse_datetime(value)
    if dt is None:
        d = parse_date(value) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) else None
        if d is None:
            raise CommandError(
                f"{option} {value!r} is not an ISO date or datetime (e.g. 2026-11-01 or 2026-11-01T12:00:00Z)"
            )
        dt = datetime(d.year, d.month, d.day)
    if timezone.is_naive(dt):
        dt = timezone.make_aware(dt, UTC)
    return dt


def parse_duration(value: str, option: str) -> timedelta:
    match = DURATION.match(value)
    if not match:
        raise CommandError(f"{option} {value!r} is not a duration like 30s, 15m, 2h or 7d")
    n, unit = int(match.group(1)), match.group(2)
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: n})
