"""The remote source: the producer is another service; its events come from its ``GET /api/events/``.

Configured per producer in ``DELIVERY_AUDIT_REMOTE_PRODUCERS`` (the API's URL and a bearer token
from ``api_token_create`` on that service). Events are streamed a page (1,000) at a time, per
type, and each page is compared with this database's processed-event and failure rows in one
statement, so memory holds one page (plus the missing events kept to re-send, up to the budget).
The API's ``published_before``/``published_after`` select published events only, split at the
grace horizon: those before it can be missing, those after are in flight.

The API does not say when an event was published, so the watermark stops at the occurred time of
the oldest event not accounted for, never later than its publishing (occurred_at <= published_at).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import urllib3
from django.conf import settings
from django.db import connection
from django.utils.dateparse import parse_datetime

from .. import envelope
from ..models import OutboxEvent
from .accounting import MISSING, PROCESSED_JOIN, RESEND_JOIN, AuditError, Finding, state_sql

PAGE = 1000  # the API's largest page


class EventsApi:
    """A client of one producer's events API (bearer token), following its cursors."""

    def __init__(self, producer: str, url: str, token: str) -> None:
        self.producer, self.url, self.token = producer, url, token
        self.http = urllib3.PoolManager(
            timeout=urllib3.Timeout(total=settings.DELIVERY_AUDIT_API_TIMEOUT_SECONDS),
            retries=urllib3.Retry(total=3, backoff_factor=0.5, status_forcelist=(502, 503, 504)),
        )

    def pages(self, params: dict[str, str]) -> Iterator[list[dict[str, Any]]]:
        query: dict[str, str] | None = params
        while query is not None:
            doc = self._get(query)
            yield doc["results"]
            # The next page's cursor, asked of our own base URL (the host the API saw may differ).
            query = dict(parse_qsl(urlsplit(doc["next"]).query)) if doc.get("next") else None

    def _get(self, query: dict[str, str]) -> dict[str, Any]:
        where = f"the events API of {self.producer} ({self.url})"
        try:
            resp = self.http.request(
                "GET",
                f"{self.url}?{urlencode(query)}",
                headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
            )
        except urllib3.exceptions.HTTPError as exc:
            raise AuditError(f"{where} is unreachable: {exc}") from None
        if resp.status == 401:
            raise AuditError(
                f"{where} refused the token (401): set DELIVERY_AUDIT_REMOTE_PRODUCERS"
                f"[{self.producer!r}]['token'] to one made by `manage.py api_token_create` there"
            )
        try:
            doc = json.loads(resp.data)
        except ValueError:
            doc = None
        if resp.status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
            raise AuditError(f"{where} answered {resp.status}: {resp.data[:300]!r}")
        return doc


class RemoteSource:
    """Events of a producer that runs as another service with its own database."""

    def __init__(self, producer: str, url: str, token: str) -> None:
        self.producer = producer
        self.api = EventsApi(producer, url, token)

    def describe(self) -> str:
        return f"{self.producer}: {self.api.url}"

    def audit(
        self,
        *,
        consumer: str,
        types: Sequence[str],
        horizon: datetime,
        published_from: datetime | None,
        since: datetime | None,
        budget: int,
    ) -> Finding:
        finding = Finding()
        for event_type in types:
            base = {"type": event_type, "limit": str(PAGE)}
            if since is not None:
                base["occurred_after"] = since.isoformat()
            settled = {**base, "published_before": horizon.isoformat()}
            if published_from is not None:
                settled["published_after"] = published_from.isoformat()
            fresh = {**base, "published_after": max(horizon, published_from or horizon).isoformat()}
            for query, is_fresh in ((settled, False), (fresh, True)):
                for page in self.api.pages(query):
                    self._classify(consumer, page, is_fresh, horizon, budget, finding)
        return finding

    def _classify(
        self,
        consumer: str,
        page: list[dict[str, Any]],
        fresh: bool,
        horizon: datetime,
        budget: int,
        finding: Finding,
    ) -> None:
        if not page:
            return
        try:
            ids = [uuid.UUID(e["id"]) for e in page]
            occurred = [parse_datetime(e["occurred_at"]) for e in page]
        except (KeyError, TypeError, ValueError) as exc:
            raise AuditError(f"the events API of {self.producer} returned a malformed event: {exc}") from None
        with connection.cursor() as cur:
            cur.execute(
                f"SELECT e.ord, {state_sql('%(fresh)s')} "  # noqa: S608 - our SQL
                f"FROM unnest(%(ids)s::uuid[]) WITH ORDINALITY AS e(id, ord) {PROCESSED_JOIN} {RESEND_JOIN}",
                {"consumer": consumer, "horizon": horizon, "fresh": fresh, "ids": ids},
            )
            states = dict(cur.fetchall())
        for i, event in enumerate(page):
            state = states[i + 1]
            finding.add(event["type"], state, 1)
            # published_at is not in the API's answer: occurred_at is never later
            finding.note_unaccounted(state, occurred[i], occurred[i])
            if state == MISSING and len(finding.to_resend) < budget:
                finding.to_resend.append(_row(event))


def _row(event: dict[str, Any]) -> OutboxEvent:
    """An unsaved row that sends exactly the body the producer published (and signed)."""
    row = OutboxEvent(id=uuid.UUID(event["id"]), type=event["type"], producer=event["producer"])
    row.__dict__["_message_body"] = envelope.serialize(event)
    return row


def remote_source(producer: str) -> RemoteSource | None:
    """The remote source of ``producer`` if DELIVERY_AUDIT_REMOTE_PRODUCERS names it."""
    conf = settings.DELIVERY_AUDIT_REMOTE_PRODUCERS.get(producer)
    if not conf:
        return None
    if not conf.get("url") or not conf.get("token"):
        raise AuditError(
            f"DELIVERY_AUDIT_REMOTE_PRODUCERS[{producer!r}] needs both 'url' (the producer's "
            "GET /api/events/) and 'token'"
        )
    return RemoteSource(producer, conf["url"], conf["token"])
