"""GET /api/events/: token auth, validated filters, a cursor walk that sees every event once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from events import contracts
from events.models import OutboxEvent
from events.outbox import NewEvent, record_events
from tests.factories import agreement_data

pytestmark = pytest.mark.django_db

URL = "/api/events/"


@pytest.fixture
def token(capsys):
    call_command("api_token_create", "reporting")
    return capsys.readouterr().out.strip()


@pytest.fixture
def events():
    now = timezone.now()
    with transaction.atomic():
        # 25 events, several sharing one timestamp, to exercise the (time, id) cursor
        return record_events(
            sender=None,
            events=[
                NewEvent(
                    contracts.AGREEMENT_CREATED,
                    f"A-{i}",
                    1,
                    agreement_data(f"A-{i}"),
                    occurred_at=now - timedelta(minutes=i // 3),
                )
                for i in range(25)
            ],
        )


def test_no_token_or_a_bad_one_is_401(client, token):
    assert client.get(URL).status_code == 401
    resp = client.get(URL, HTTP_AUTHORIZATION="Bearer not-the-token")
    assert resp.status_code == 401
    assert resp["WWW-Authenticate"].startswith("Bearer")
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


@pytest.mark.parametrize(
    "query, message",
    [
        ("occurred_after=last-tuesday", "occurred_after must be an ISO 8601 datetime"),
        ("limit=0", "limit must be an integer"),
        ("limit=abc", "limit must be an integer"),
        ("type=agreement.made", "not a known event type"),
        ("cursor=%%%", "cursor is not one this API returned"),
        ("agregate_id=x", "unknown parameter"),
    ],
)
def test_bad_filter_values_are_400_with_a_message(client, token, query, message):
    resp = client.get(f"{URL}?{query}", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert resp.status_code == 400
    assert message in resp.json()["error"]


def test_pagination_walk_returns_every_event_exactly_once_in_order(client, token, events):
    seen = []
    url = f"{URL}?limit=4&type=agreement.created"
    pages = 0
    while url:
        resp = client.get(url, HTTP_AUTHORIZATION=f"Token {token}")
        assert resp.status_code == 200
        body = resp.json()
        seen.extend(body["results"])
        url = body["next"]
        pages += 1
    assert pages == 7
    assert [e["id"] for e in seen] == [
        str(i) for i in OutboxEvent.objects.order_by("occurred_at", "id").values_list("id", flat=True)
    ]
    assert len({e["id"] for e in seen}) == 25


def test_filters_by_aggregate_and_time_range(client, token, events):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    body = client.get(f"{URL}?aggregate_type=agreement&aggregate_id=A-7", **auth).json()
    assert [e["aggregate_id"] for e in body["results"]] == ["A-7"]
    newest = OutboxEvent.objects.order_by("-occurred_at").first().occurred_at
    after = (newest - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    body = client.get(URL, {"occurred_after": after}, **auth).json()
    assert sorted(e["aggregate_id"] for e in body["results"]) == ["A-0", "A-1", "A-2"]


def test_api_is_read_only(client, token):
    assert client.post(URL, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 405
