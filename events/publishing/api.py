"""The event store's read API: ``GET /api/events/`` (historical events, oldest first, cursor
pagination, bearer token). The producer's answer to "what happened" for any consumer."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET

from .. import contracts
from ..models import ApiToken, OutboxEvent

MAX_LIMIT = 1000
ALLOWED_PARAMS = {
    "type",
    "aggregate_type",
    "aggregate_id",
    "occurred_after",
    "occurred_before",
    "published_after",
    "published_before",
    "limit",
    "cursor",
}


class BadRequest(ValueError):
    pass


def _authenticate(request: HttpRequest) -> ApiToken | None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() not in ("bearer", "token") or not key.strip():
        return None
    token = ApiToken.objects.filter(key_hash=ApiToken.hash_key(key.strip()), active=True).first()
    if token and (token.last_used_at is None or timezone.now() - token.last_used_at > timedelta(minutes=1)):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token


def _datetime(name: str, value: str) -> datetime:
    try:
        dt = parse_datetime(value) if value else None
    except ValueError:
        dt = None
    if dt is None:
        raise BadRequest(f"{name} must be an ISO 8601 datetime, e.g. 2026-11-01T00:00:00Z (got {value!r})")
    utc = _in_utc(dt)
    if utc is None:
        raise BadRequest(f"{name} is out of range once converted to UTC (got {value!r})")
    return utc


def _in_utc(dt: datetime) -> datetime | None:
    """``dt`` in UTC (naive = UTC), or None if that leaves years 1-9999. PostgreSQL refuses UTC
    offsets beyond 15:59 that ISO 8601 allows, so only UTC values reach the query."""
    try:
        return dt.astimezone(UTC) if timezone.is_aware(dt) else dt.replace(tzinfo=UTC)
    except OverflowError:
        return None


def _encode_cursor(row: OutboxEvent) -> str:
    raw = json.dumps([row.occurred_at.isoformat(), str(row.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Ours are about 90 characters; refusing long ones before decoding also keeps a cursor nested
# thousands deep (RecursionError in json) from ever reaching the parser.
MAX_CURSOR_LENGTH = 200


def _decode_cursor(value: str) -> tuple[datetime, uuid.UUID]:
    """The (occurred_at, id) a cursor of ours carries; BadRequest for anything else."""
    bad = BadRequest("cursor is not one this API returned; start again without it")
    if len(value) > MAX_CURSOR_LENGTH:
        raise bad
    try:
        decoded = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise bad from None
    # Exactly what _encode_cursor writes: two strings. A list or dict in either place is not ours.
    if not (isinstance(decoded, list) and len(decoded) == 2 and all(isinstance(p, str) for p in decoded)):
        raise bad
    try:
        dt = parse_datetime(decoded[0])
        event_id = uuid.UUID(decoded[1])
    except ValueError:
        raise bad from None
    utc = _in_utc(dt) if dt is not None else None
    if utc is None:
        raise bad
    return utc, event_id


# Open transactions in this database other than ours: the oldest began at or before the first
# stamp of any event still to commit. pg_stat_clear_snapshot: a transaction reads the activity
# table once and keeps what it read, and a test (or ATOMIC_REQUESTS) may ask twice in one.
_OLDEST_OPEN = (
    "SELECT pg_stat_clear_snapshot();"
    " SELECT least(clock_timestamp(), min(xact_start)) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND backend_type = 'client backend' AND xact_start IS NOT NULL"
)


def settled_before() -> datetime:
    """The API's horizon: every event that occurred before it has committed (or never will), so
    a client that has read up to some point below it never finds an older event there later.

    A row's ``occurred_at`` is stamped in its transaction (``outbox.PreparedEvents``), so it is
    never earlier than that transaction's start, and a transaction still open began no earlier
    than the oldest open now: a daily run or an import batch that commits minutes after its first
    row holds the horizon back until it commits, where a fixed window let a cursor pass its rows.
    ``EVENTS_API_SETTLE_SECONDS`` below that allows for the clocks of the hosts that stamp.
    Read by a statement of its own, before the one that reads the events: a single statement's
    snapshot is taken before it reads the activity table, and a transaction that committed in
    between would be neither seen nor waited for. Needs the sessions that write events to be
    visible to this one (the same database role, or ``pg_read_all_stats``); a long open
    transaction (an idle-in-transaction session, a backup) holds the horizon back while it lasts."""
    with connection.cursor() as cur:
        cur.execute(_OLDEST_OPEN)
        (oldest,) = cur.fetchone()
    return oldest - timedelta(seconds=settings.EVENTS_API_SETTLE_SECONDS)


def _filtered(params: Any) -> tuple[Any, int]:
    unknown = set(params) - ALLOWED_PARAMS
    if unknown:
        raise BadRequest(f"unknown parameter(s) {sorted(unknown)}; allowed: {sorted(ALLOWED_PARAMS)}")
    for name in sorted(params):
        # PostgreSQL text cannot hold NUL: refused here rather than as a database error (500).
        if "\x00" in params[name]:
            raise BadRequest(f"{name} must not contain a NUL character")
    qs = OutboxEvent.objects.filter(occurred_at__lt=settled_before())
    if params.get("type"):
        if params["type"] not in contracts.REGISTRY:
            raise BadRequest(f"type {params['type']!r} is not a known event type")
        qs = qs.filter(type=params["type"])
    if params.get("aggregate_type"):
        qs = qs.filter(aggregate_type=params["aggregate_type"])
    if params.get("aggregate_id"):
        qs = qs.filter(aggregate_id=params["aggregate_id"])
    if "occurred_after" in params:
        qs = qs.filter(occurred_at__gte=_datetime("occurred_after", params["occurred_after"]))
    if "occurred_before" in params:
        qs = qs.filter(occurred_at__lt=_datetime("occurred_before", params["occurred_before"]))
    # Either one selects published events only: what a consumer's delivery audit compares with
    # what it handled (an unpublished event is the relay's to send, not missing).
    if "published_after" in params:
        qs = qs.filter(published_at__gte=_datetime("published_after", params["published_after"]))
    if "published_before" in params:
        qs = qs.filter(published_at__lt=_datetime("published_before", params["published_before"]))
    try:
        limit = int(params.get("limit", 100))
    except ValueError:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    if params.get("cursor"):
        after_ts, after_id = _decode_cursor(params["cursor"])
        qs = qs.filter(Q(occurred_at__gt=after_ts) | Q(occurred_at=after_ts, id__gt=after_id))
    return qs.order_by("occurred_at", "id"), limit


@require_GET
def events_api(request: HttpRequest) -> JsonResponse:
    """Historical events, oldest first, with cursor pagination. Read-only; bearer token."""
    if _authenticate(request) is None:
        response = JsonResponse(
            {"error": "authentication required: send 'Authorization: Bearer <token>'"}, status=401
        )
        response["WWW-Authenticate"] = 'Bearer realm="events"'
        return response
    try:
        qs, limit = _filtered(request.GET)
    except BadRequest as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    rows = list(qs[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_url = None
    if has_more:
        params = request.GET.copy()
        params["cursor"] = _encode_cursor(rows[-1])
        next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
    return JsonResponse({"results": [r.envelope() for r in rows], "next": next_url})
