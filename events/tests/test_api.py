"""GET /api/events/: token auth, validated filters, a cursor walk that sees every event once."""

from __future__ import annotations

import base64
import json
import threading
from datetime import timedelta
from datetime import timezone as dt_timezone

import pytest
from django.core.management import call_command
from django.db import connection as db_connection
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from events import contracts
from events.models import OutboxEvent
from events.publishing import api
from events.publishing.api import ALLOWED_PARAMS
from events.publishing.outbox import NewEvent, record_events, recording_now
from tests.factories import agreement_data

pytestmark = pytest.mark.django_db

URL = "/api/events/"


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def base64_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


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


@pytest.mark.parametrize(
    "query",
    [
        {"aggregate_id": "A-\x001"},
        {"aggregate_type": "agree\x00ment"},
        {"type": "agreement.created\x00"},
        {"cursor": _cursor(["2026-11-01T00:00:00+00:00", ["a", "b"]])},
        {"cursor": _cursor(["2026-11-01T00:00:00+00:00", {"id": 1}])},
        {"cursor": _cursor([{"at": 1}, "0b7f3a4e-8a43-4a0e-9a53-1f1c1b0f2d11"])},
        {"cursor": _cursor(["2026-11-01T00:00:00+00:00", "0b7f3a4e-8a43-4a0e-9a53-1f1c1b0f2d11", 3])},
        {"cursor": _cursor("not a pair")},
        {"cursor": base64_of("[" * 3000 + "]" * 3000)},
    ],
    ids=[
        "nul-aggregate-id",
        "nul-aggregate-type",
        "nul-type",
        "list-id",
        "dict-id",
        "dict-time",
        "triple",
        "string",
        "nested-3000",
    ],
)
def test_hostile_values_are_400_with_a_reason_never_500(client, token, query):
    resp = client.get(URL, query, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert resp.status_code == 400
    assert resp.json()["error"]


OFFSETS = st.timedeltas(
    min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)
).map(lambda offset: dt_timezone(timedelta(minutes=offset // timedelta(minutes=1))))
PARAM_VALUES = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),  # NUL and every other character
    st.sampled_from(sorted(contracts.REGISTRY)),
    st.integers(-5, 5000).map(str),
    st.datetimes(timezones=OFFSETS).map(lambda d: d.isoformat()),  # years 1 to 9999, any offset
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=8,
    ).map(_cursor),
    st.integers(1, 4000).map(lambda depth: base64_of("[" * depth + "]" * depth)),
)


def test_datetimes_with_any_iso_offset_are_compared_in_utc(client, token):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    # PostgreSQL refuses offsets beyond 15:59, ISO 8601 allows them: converted to UTC first
    assert client.get(URL, {"occurred_after": "2026-02-24T02:48:32-23:59"}, **auth).status_code == 200
    resp = client.get(URL, {"occurred_before": "0001-01-01T00:00:00+01:00"}, **auth)
    assert resp.status_code == 400 and "out of range" in resp.json()["error"]


PARAM_NAMES = st.sampled_from(sorted(ALLOWED_PARAMS) + ["agregate_id", "", "\x00"])


@hypothesis_settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(query=st.dictionaries(PARAM_NAMES, PARAM_VALUES, max_size=4))
def test_any_query_is_200_or_400_never_500(client, token, query):
    resp = client.get(URL, query, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert resp.status_code in (200, 400), (query, resp.content[:300])
    if resp.status_code == 400:
        assert resp.json()["error"]


def _read_on(client, token, after: str | None) -> list[dict]:
    """Every event the API gives a client that read up to ``after`` (an occurred_at) and reads on
    from there, as a consumer catching up does (``occurred_after`` is inclusive: ids dedupe)."""
    url, seen = f"{URL}?limit=2" + (f"&occurred_after={after}".replace("+", "%2B") if after else ""), []
    while url:
        resp = client.get(url, HTTP_AUTHORIZATION=f"Token {token}")
        assert resp.status_code == 200, resp.content
        seen.extend(resp.json()["results"])
        url = resp.json()["next"]
    return seen


def _record(aggregate_id: str, occurred_at=None) -> None:
    with transaction.atomic():
        record_events(
            sender=None,
            events=[
                NewEvent(
                    contracts.AGREEMENT_CREATED,
                    aggregate_id,
                    1,
                    agreement_data(aggregate_id),
                    occurred_at=occurred_at,
                )
            ],
        )


class LongTransaction(threading.Thread):
    """A transaction of another session (a daily run's chunk, an import batch) that runs ``begin``
    and then waits to be told to run ``end`` and commit."""

    def __init__(self, begin, end=lambda began: None, settings_sql: str = "") -> None:
        super().__init__()
        self.begin, self.end, self.settings_sql = begin, end, settings_sql
        self.begun, self.go_on = threading.Event(), threading.Event()

    error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.settings_sql:
                with db_connection.cursor() as cur:
                    cur.execute(self.settings_sql)
            with transaction.atomic():
                began = self.begin()
                self.begun.set()
                assert self.go_on.wait(30)
                self.end(began)
        except BaseException as exc:  # noqa: BLE001 - told to the test, not lost in the thread
            self.error = exc
            self.begun.set()
        finally:
            db_connection.close()

    def __enter__(self) -> LongTransaction:
        self.start()
        if not self.begun.wait(30) or self.error is not None:
            self._end()
            raise self.error or AssertionError("the long transaction did not begin within 30 s")
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._end()
        if exc_type is None and self.error is not None:  # a failure of the test body comes first
            raise self.error

    def _end(self) -> None:
        self.go_on.set()
        self.join(30)
        assert not self.is_alive(), "the long transaction did not end within 30 s"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stamp", ["as recorded", "its own, read first"])
def test_a_client_reading_while_a_long_transaction_is_open_gets_its_events_once_it_commits(
    client, token, stamp
):
    # given an event committed, then a long transaction that has stamped an event and not
    # committed it yet (recorded at once, or, as the daily run does, with its own time read first
    # and recorded later), and an event committed after that one was stamped
    _record("A-first")
    if stamp == "as recorded":
        late = LongTransaction(begin=lambda: _record("A-late"))
    else:
        late = LongTransaction(begin=recording_now, end=lambda began: _record("A-late", occurred_at=began))
    with late:
        _record("A-after")
        # when a client reads all there is while it is open, then reads on from the newest event
        # it got once it has committed
        first = _read_on(client, token, None)
    then = _read_on(client, token, max(e["occurred_at"] for e in first))
    # then it got every event: none stamped after the open transaction began was shown before
    # the transaction committed, so reading on from there skipped nothing
    assert [e["aggregate_id"] for e in first] == ["A-first"]
    assert {e["aggregate_id"] for e in first + then} == {"A-first", "A-late", "A-after"}


@pytest.mark.django_db(transaction=True)
def test_a_recording_transaction_unseen_makes_the_api_wait_not_guess(client, token, caplog, monkeypatch):
    with db_connection.cursor() as cur:
        cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if not cur.fetchone()[0]:
            pytest.fail("this test hides a session with SET track_activities, which needs a superuser")
    monkeypatch.setattr(api, "_last_logged", {})
    # given a session recording events whose activity this one cannot see (track_activities off;
    # another database role's is as hidden without pg_read_all_stats)
    _record("A-first")
    with LongTransaction(begin=lambda: _record("A-hidden"), settings_sql="SET track_activities = off"):
        # when a client asks for events
        resp = client.get(URL, HTTP_AUTHORIZATION=f"Token {token}")
        # (and again, and with a request it cannot use)
        again = client.get(URL, HTTP_AUTHORIZATION=f"Token {token}")
        bad = client.get(f"{URL}?limit=0", HTTP_AUTHORIZATION=f"Token {token}")
    # then it is told to come back (503, Retry-After) with the reason, logged for the operator once
    # (a client retrying does not flood the log), rather than given events an unseen transaction
    # may still commit older ones among; a request it cannot use is told so first
    assert (resp.status_code, again.status_code, bad.status_code) == (503, 503, 400)
    assert resp["Retry-After"] == "5"
    assert "cannot see 1 transaction(s) recording events" in resp.json()["error"]
    assert [r.getMessage() for r in caplog.records if "answering 503" in r.getMessage()] == [
        f"events API: answering 503 (logged once a minute): {resp.json()['error'].split(': ', 1)[1]}"
    ]
    # and once it has ended, every event is there
    assert {e["aggregate_id"] for e in _read_on(client, token, None)} == {"A-first", "A-hidden"}


@pytest.mark.django_db(transaction=True)
def test_a_long_transaction_that_records_no_event_does_not_hold_the_api_back(client, token):
    # given a session that has been reading for a while (a report, a backup) and an event
    # committed since it began
    with LongTransaction(begin=lambda: OutboxEvent.objects.count()):
        _record("A-meanwhile")
        # when a client asks for events, then it gets that one at once
        assert [e["aggregate_id"] for e in _read_on(client, token, None)] == ["A-meanwhile"]


@pytest.mark.django_db(transaction=True)
def test_a_delivery_audit_reading_published_events_is_not_held_back_by_a_long_transaction(client, token):
    # given a long transaction recording events, and an event committed and published since
    with LongTransaction(begin=lambda: _record("A-late")):
        _record("A-published")
        OutboxEvent.objects.filter(aggregate_id="A-published").update(published_at=timezone.now())
        # when the audit asks for what was published (its grace period covers late commits)
        since = (timezone.now() - timedelta(hours=1)).isoformat().replace("+", "%2B")
        resp = client.get(f"{URL}?published_after={since}", HTTP_AUTHORIZATION=f"Token {token}")
    # then it gets the published event without waiting for the open transaction
    assert [e["aggregate_id"] for e in resp.json()["results"]] == ["A-published"]


@pytest.mark.django_db(transaction=True)
def test_a_holder_unseen_at_first_look_and_gone_at_the_second_is_not_a_503(client, token, monkeypatch):
    # given a holder that the activity table showed with no start the first time (between its
    # commit and reporting it) and that no longer holds the lock a moment later
    _record("A-first")
    looks = []
    real = api._holders

    def holders(pids):
        looks.append(pids)
        now, held, _unseen = real(pids)
        return (now, held, [4242]) if pids is None else (now, held, [])

    monkeypatch.setattr(api, "_holders", holders)
    # when a client asks for events
    resp = client.get(URL, HTTP_AUTHORIZATION=f"Token {token}")
    # then the second look cleared it: the events, not a 503
    assert resp.status_code == 200
    assert [e["aggregate_id"] for e in resp.json()["results"]] == ["A-first"]
    assert looks == [None, [4242]]
