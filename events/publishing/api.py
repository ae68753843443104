"""The event store's read API: ``GET /api/events/`` (historical events, oldest first, cursor
pagination, bearer token). The producer's answer to "what happened" for any consumer."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET

from .. import contracts
from ..models import ApiToken, OutboxEvent
from . import outbox

logger = logging.getLogger(__name__)

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


# The transactions recording events now (outbox.RECORDING_LOCK's holders: each took it before its
# first stamp) and what the activity table says of each; statement_timestamp() is fixed before
# pg_locks is read. ``%(pids)s``: only these (a second look), or all.
# pg_stat_clear_snapshot: a transaction reads the activity table once and keeps what it read.
_HOLDERS = (
    "SELECT pg_stat_clear_snapshot();"
    " SELECT statement_timestamp(), l.locktype IS NOT NULL, l.pid, a.pid, a.xact_start, a.state,"
    " a.application_name"
    " FROM (SELECT 1) AS one LEFT JOIN (pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid)"
    " ON l.locktype = 'advisory' AND l.classid = %(classid)s AND l.objid = %(objid)s AND l.objsubid = 2"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND l.pid IS DISTINCT FROM pg_backend_pid()"
    " AND (%(pids)s::int[] IS NULL OR l.pid = ANY(%(pids)s::int[]))"
)
# a horizon held back longer than this is logged, with the session that holds it
HELD_BACK_WARNING = timedelta(minutes=5)
_LOG_EVERY = 60.0  # seconds: a client retrying every few seconds does not flood the log
_last_logged: dict[str, float] = {}


class HorizonUnknown(Exception):
    """A transaction recording events that this session cannot see: how far events are complete
    is unknown, so none past it is shown (503) rather than one shown before an older one."""


def _log_now(kind: str) -> bool:
    now = time.monotonic()
    if now - _last_logged.get(kind, -_LOG_EVERY) < _LOG_EVERY:
        return False
    _last_logged[kind] = now
    return True


def _holders(pids: list[int] | None) -> tuple[datetime, list[tuple[Any, ...]], list[Any]]:
    """(statement time, [(start, pid, application_name)] of the holders seen, pids of the ones
    not seen). A holder with no activity row has ended since pg_locks was read (or, if the
    activity table was read first, began after it: after the statement's time, so after the
    horizon), as has one shown idle; a prepared transaction's has no pid; one shown with no start
    is another role's (no privilege), has track_activities off, or is between its commit and
    reporting it: only a second look tells the last from the others."""
    lock = dict(zip(("classid", "objid"), outbox.RECORDING_LOCK, strict=True))
    with connection.cursor() as cur:
        cur.execute(_HOLDERS, {**lock, "pids": pids})
        rows = cur.fetchall()
    held, unseen = [], []
    for _, is_holder, pid, seen_pid, start, state, name in rows:
        if not is_holder or (pid is not None and (seen_pid is None or (start is None and state == "idle"))):
            continue
        if start is None:
            unseen.append(pid)
        else:
            held.append((start, pid, name))
    return rows[0][0], held, unseen


def settled_before() -> datetime:
    """The API's horizon: every event that occurred before it has committed (or never will), so a
    client that has read up to some point below it never finds an older event there later.

    Every transaction that records events holds ``outbox.RECORDING_LOCK`` from before its first
    stamp (``outbox.recording_now``), so none of its events occurred before that transaction
    began; the horizon is the start of the oldest such transaction open now, or now, less
    ``EVENTS_API_SETTLE_SECONDS`` for the clocks of the hosts that stamp. A daily run's chunk or
    an import batch that commits minutes after its first event holds it back until it commits,
    where a fixed window let a cursor pass its events; a transaction that records nothing (a
    report, a backup) does not. Read by statements of their own, before the one that reads the
    events (under READ COMMITTED, which the view keeps by running outside a request-wide
    transaction): a single statement's snapshot is taken before it reads pg_locks, and a writer
    that committed in between would be neither seen nor waited for. A holder not seen twice
    (another role, unless this one has ``pg_read_all_stats`` or is a member of it; a session with
    ``track_activities`` off; a prepared transaction) raises HorizonUnknown."""
    now, held, unseen = _holders(None)
    prepared, others = [p for p in unseen if p is None], [p for p in unseen if p is not None]
    if others:  # a second look: a holder that has committed since no longer holds the lock (one
        # holding it again, in a transaction begun since, is as safe counted as not)
        _, held_again, others = _holders(others)
        held += held_again
    unseen = prepared + others
    if unseen:
        raise HorizonUnknown(
            f"this database session cannot see {len(unseen)} transaction(s) recording events (pid "
            f"{', '.join(str(p) for p in unseen)}: a prepared transaction's is none; another database "
            "role's needs this one to have pg_read_all_stats; track_activities must be on)"
        )
    oldest = min(held, default=(now, None, ""))
    if now - oldest[0] > HELD_BACK_WARNING and _log_now("held back"):
        logger.warning(
            "events API: events after %s held back by pid %s (%s), recording events since then",
            oldest[0].isoformat(),
            oldest[1],
            oldest[2] or "no application_name",
        )
    return min(now, oldest[0]) - timedelta(seconds=settings.EVENTS_API_SETTLE_SECONDS)


def _filtered(params: Any) -> tuple[Any, int]:
    unknown = set(params) - ALLOWED_PARAMS
    if unknown:
        raise BadRequest(f"unknown parameter(s) {sorted(unknown)}; allowed: {sorted(ALLOWED_PARAMS)}")
    for name in sorted(params):
        # PostgreSQL text cannot hold NUL: refused here rather than as a database error (500).
        if "\x00" in params[name]:
            raise BadRequest(f"{name} must not contain a NUL character")
    qs = OutboxEvent.objects.all()
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
    # last, once the request is known to be good: it reads pg_locks
    if "published_after" in params or "published_before" in params:
        # published events have committed; a delivery audit's grace period covers the late ones
        horizon = timezone.now() - timedelta(seconds=settings.EVENTS_API_SETTLE_SECONDS)
    else:
        horizon = settled_before()
    return qs.filter(occurred_at__lt=horizon).order_by("occurred_at", "id"), limit


@transaction.non_atomic_requests  # settled_before needs a snapshot per statement (READ COMMITTED)
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
    except HorizonUnknown as exc:
        if _log_now("unknown"):
            logger.error("events API: answering 503 (logged once a minute): %s", exc)
        response = JsonResponse(
            {"error": f"which events are complete is unknown for now, try again later: {exc}"}, status=503
        )
        response["Retry-After"] = "5"
        return response
    rows = list(qs[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_url = None
    if has_more:
        params = request.GET.copy()
        params["cursor"] = _encode_cursor(rows[-1])
        next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
    return JsonResponse({"results": [r.envelope() for r in rows], "next": next_url})
