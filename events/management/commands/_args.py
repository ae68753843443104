"""Argument parsing shared by the operator commands: clear errors a person can act on."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_when(value: str, option: str) -> datetime:
    """ISO date (midnight UTC) or ISO datetime (naive = UTC); CommandError saying the format."""
    problem = "is not an ISO date or datetime"
    try:
        dt = parse_datetime(value)
        if dt is None and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            d = parse_date(value)
            dt = datetime(d.year, d.month, d.day) if d else None
    except ValueError as exc:  # well formed but impossible: 2026-13-45, 2026-02-30T25:00
        dt, problem = None, f"is not a valid date ({exc})"
    if dt is None:
        raise CommandError(
            f"{option} {value!r} {problem}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM], "
            "e.g. 2026-11-01 or 2026-11-01T12:00:00Z (UTC unless an offset is given)"
        )
    if timezone.is_naive(dt):
        dt = timezone.make_aware(dt, UTC)
    return dt


def parse_duration(value: str, option: str) -> timedelta:
    match = DURATION.match(value)
    if not match:
        raise CommandError(f"{option} {value!r} is not a duration like 30s, 15m, 2h or 7d")
    n, unit = int(match.group(1)), match.group(2)
    try:
        return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: n})
    except OverflowError:
        raise CommandError(f"{option} {value!r} is longer than any message can be old") from None
