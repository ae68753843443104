"""COPY bulk inserts: every text arrives as itself; only None is NULL; events prepared ahead of their
transaction are recorded as they would have been."""

from __future__ import annotations

import gc
import time
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone as django_timezone

from agreements.models import Agreement
from core.bulk import copy_line, copy_rows, copy_value, insert_rows, update_rows
from core.commands import few_collections
from events import contracts
from events.models import OutboxEvent
from events.publishing.outbox import NewEvent, prepare_events, record_events
from invoicing.models import BillableAgreement
from tests.factories import agreement_data

pytestmark = pytest.mark.django_db

TEXTS = ["\\N", "", "\\", '"', 'say "hi", then\nleave', "a,b", "\t\r\n", "🙂", "NULL", "\\.", " "]


def test_text_that_looks_like_null_or_csv_syntax_arrives_unchanged():
    # given a table and texts that COPY's CSV format could take for NULL, a quote or end of data
    with connection.cursor() as cur:
        cur.execute("CREATE TEMP TABLE bulk_probe (n int NOT NULL, t text, d date)")
    # when they are copied, with a real NULL among them
    rows = [(i, t, "2026-01-31") for i, t in enumerate(TEXTS)] + [(len(TEXTS), None, None)]
    assert copy_rows("bulk_probe", ("n", "t", "d"), rows) == len(TEXTS) + 1
    # then each reads back as itself
    with connection.cursor() as cur:
        cur.execute("SELECT t, d IS NULL FROM bulk_probe ORDER BY n")
        back = cur.fetchall()
    assert back == [(t, False) for t in TEXTS] + [(None, True)]


def test_a_row_of_every_kind_of_value_reads_back_as_itself_the_fast_way_or_escaped():
    # given rows mixing text (plain and hostile), a model's choice (a str subclass),
    # numbers, booleans, ids, dates and two timestamps that are the same instant in two offsets
    utc = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    paris = utc.astimezone(timezone(timedelta(hours=1)))
    assert utc == paris  # equal, yet written differently
    choice = Agreement.Status.ACTIVE

    class Text(str):  # another str subclass, holding what must be escaped
        pass

    tabbed = Text("tab\there\\N")
    hostile = [
        (3 + i, t, choice, True, uuid.UUID(int=3 + i), date(2026, 2, 1), utc, t) for i, t in enumerate(TEXTS)
    ]
    rows = [
        (1, "plain", choice, True, uuid.UUID(int=1), date(2026, 1, 31), utc, None),
        (2, "plain", choice, False, uuid.UUID(int=2), date(2026, 1, 31), paris, None),
        *hostile,
        (100, "plain", tabbed, False, uuid.UUID(int=100), date(2026, 1, 31), paris, tabbed),
    ]
    # then each line is what escaping every value alone gives
    texts: dict[object, str] = {}
    for row in rows:
        assert copy_line(row, texts) == "\t".join(map(copy_value, row)) + "\n"
    # and each value reads back as itself (each timestamp in the offset it was given in)
    with connection.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE bulk_kinds (n int, t text, c text, b bool, u uuid, d date, ts text, x text)"
        )
    copy_rows("bulk_kinds", ("n", "t", "c", "b", "u", "d", "ts", "x"), rows)
    with connection.cursor() as cur:
        cur.execute("SELECT t, c, b, u, d, ts, x FROM bulk_kinds ORDER BY n")
        back = cur.fetchall()
    assert back == [(r[1], str(r[2]), r[3], r[4], r[5], r[6].isoformat(), r[7]) for r in rows]
    assert back[-1][1] == back[-1][6] == "tab\there\\N"
    assert back[0][5].endswith("+00:00") and back[1][5].endswith("+01:00")


def test_a_nul_is_refused_naming_the_table_however_the_row_is_written():
    with connection.cursor() as cur:
        cur.execute("CREATE TEMP TABLE bulk_nul (t text)")
    with pytest.raises(DataError, match="NUL"):
        copy_rows("bulk_nul", ("t",), [("fine",), ("a\x00b",)])


def test_few_collections_gives_the_process_its_collector_back_even_after_an_error():
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with pytest.raises(RuntimeError), few_collections(first_generation=12_345):
        assert gc.get_threshold()[0] == 12_345 and gc.get_freeze_count() > frozen
        raise RuntimeError("the command failed")
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen


def test_few_collections_leaves_what_the_process_froze_and_overlapping_uses_restore_once():
    before = gc.get_threshold()
    gc.freeze()  # as a preforking server does before it forks
    try:
        frozen = gc.get_freeze_count()
        one, two = few_collections(), few_collections()
        one.__enter__()
        two.__enter__()
        one.__exit__(None, None, None)  # the first one in leaves first (two threads' imports)
        assert gc.get_threshold()[0] == 20_000  # the other is still running
        two.__exit__(None, None, None)
        # (a frozen object that nothing refers to any more is still freed: the count only drops)
        assert gc.get_threshold() == before and frozen * 0.9 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()


def test_rows_inserted_and_updated_in_one_statement_read_back_as_the_orm_would_save_them():
    # given one agreement already there and three new ones, with hostile text and JSON
    BillableAgreement.objects.create(agreement_id="BK-1", description="old")
    rows = [
        BillableAgreement(agreement_id=f"BK-{i}", description=TEXTS[i], customer={"name": TEXTS[i + 3]})
        for i in range(1, 5)
    ]

    # when they are inserted together, conflicts ignored
    with CaptureQueriesContext(connection) as insert:
        inserted = insert_rows(rows, ignore_conflicts=True, returning=("agreement_id",))

    # then only the new ones went in, in one statement, as saved by the ORM
    assert len(insert) == 1 and sorted(inserted) == [("BK-2",), ("BK-3",), ("BK-4",)]
    assert BillableAgreement.objects.get(agreement_id="BK-1").description == "old"
    back = BillableAgreement.objects.get(agreement_id="BK-3")
    assert back.description == TEXTS[3] and back.customer == {"name": TEXTS[6]} and back.updated_at

    # and when every row's fields change and are written together
    saved = list(BillableAgreement.objects.order_by("agreement_id"))
    for i, row in enumerate(saved):
        row.prices, row.start_date, row.created_seen = [["2026-01-31", 100 + i, 1]], date(2026, 1, 31), True
    before = {r.agreement_id: r.updated_at for r in saved}
    with CaptureQueriesContext(connection) as update:
        assert update_rows(saved, ("prices", "start_date", "created_seen", "updated_at")) == 4
    assert len(update) == 1
    for i, row in enumerate(BillableAgreement.objects.order_by("agreement_id")):
        assert row.prices == [["2026-01-31", 100 + i, 1]] and row.start_date == date(2026, 1, 31)
        assert row.created_seen and row.updated_at > before[row.agreement_id]


def test_text_too_long_for_its_column_is_refused_not_cut_short_however_the_rows_are_written():
    # given an agreement id one character longer than its column (64)
    too_long = "A" * 65
    # when rows are inserted or updated in one statement, or an event is recorded with it
    with pytest.raises(DataError, match="too long"), transaction.atomic():
        insert_rows([BillableAgreement(agreement_id=too_long)])
    row = BillableAgreement.objects.create(agreement_id="BK-short")
    row.agreement_id = too_long
    with pytest.raises(DataError, match="too long"), transaction.atomic():
        update_rows([row], ("agreement_id",))
    with pytest.raises(DataError, match="too long"), transaction.atomic():
        record_events(
            sender=None, events=[NewEvent(contracts.AGREEMENT_CREATED, too_long, 1, agreement_data())]
        )
    # then nothing was stored, shortened or otherwise
    assert not BillableAgreement.objects.filter(agreement_id__startswith="AAAA").exists()
    assert not OutboxEvent.objects.filter(aggregate_id__startswith="AAAA").exists()


def _stored(event_id: uuid.UUID) -> dict[str, Any]:
    # a row as a consumer or the relay would see it, but its times (stamped when it was written)
    row = OutboxEvent.objects.values().get(pk=event_id)
    return {k: v for k, v in row.items() if k not in ("id", "occurred_at", "next_attempt_at", "created_at")}


def test_prepared_events_are_recorded_as_they_would_have_been_and_only_those_asked_for():
    # given events checked and made into rows ahead of their transaction (as the import's reading
    # thread does), one of them with hostile text in its data
    events = [NewEvent(contracts.AGREEMENT_CREATED, f"P-{i}", 1, agreement_data(f"P-{i}")) for i in range(3)]
    events[1].data["description"] = "tab\there\\N and a line\nbreak"
    prepared = prepare_events(events)
    # when two of them are recorded with it, beside an event it was not made from (same id, other
    # data: an event changed after preparing is written as it is now, never as it was then)
    later = NewEvent(
        contracts.AGREEMENT_CREATED, "P-2", 1, agreement_data("P-2", currency="GBP"), id=events[2].id
    )
    with transaction.atomic():
        record_events(sender=None, events=[events[0], events[1], later], prepared=prepared)
    # and the same events, unprepared, in another transaction
    twins = [
        NewEvent(e.type, e.aggregate_id.replace("P-", "Q-"), 1, e.data) for e in (events[0], events[1], later)
    ]
    with transaction.atomic():
        record_events(sender=None, events=twins)
    # then what was recorded is exactly what recording them unprepared writes, times aside
    assert OutboxEvent.objects.count() == 6
    for e, twin in zip((events[0], events[1], later), twins, strict=True):
        assert _stored(e.id) | {"aggregate_id": ""} == _stored(twin.id) | {"aggregate_id": ""}
    assert OutboxEvent.objects.get(pk=events[1].id).data["description"] == "tab\there\\N and a line\nbreak"
    assert OutboxEvent.objects.get(pk=later.id).data["currency"] == "GBP"


def test_an_event_prepared_ahead_is_stamped_when_its_transaction_records_it_not_before():
    # given two events prepared ahead of their transaction, one giving its own time
    own = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    events = [
        NewEvent(contracts.AGREEMENT_CREATED, "S-1", 1, agreement_data("S-1")),
        NewEvent(contracts.AGREEMENT_CREATED, "S-2", 1, agreement_data("S-2"), occurred_at=own),
    ]
    prepared = prepare_events(events)
    time.sleep(0.01)  # the import's writer takes a batch up once the one before it has committed
    # when their transaction records them
    begun = django_timezone.now()
    with transaction.atomic():
        record_events(sender=None, events=events, prepared=prepared)
    # then the one without a time of its own occurred when it was recorded, once its transaction
    # held the events API's recording lock (the API waits for the holders' events): the other
    # keeps its own
    stamps = dict(OutboxEvent.objects.values_list("aggregate_id", "occurred_at"))
    assert stamps["S-1"] >= begun
    assert stamps["S-2"] == own


def test_recording_no_events_costs_no_statement():
    # given a transaction with nothing to record (a re-imported batch, a daily-run chunk with
    # nothing due)
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        # when its service records its (no) events
        recorded = record_events(sender=None, events=[])
    # then nothing went to the database: no lock for the events API, no COPY
    assert recorded == []
    assert [q["sql"] for q in queries.captured_queries] == []


def test_an_event_off_contract_is_refused_when_prepared():
    bad = NewEvent(contracts.AGREEMENT_CREATED, "bad", 1, agreement_data("bad", currency="euro"))
    with pytest.raises(contracts.ContractError, match="currency must match pattern"):
        prepare_events([bad])
