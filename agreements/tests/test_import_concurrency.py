"""Concurrent writers of the same external_refs (two imports, an import and the admin), and the
import's writer thread."""

from __future__ import annotations

import threading
import time
from datetime import date

import pytest
from django.db import connection, transaction

from agreements import bulk
from agreements.bulk import agreements_create_many, write_batch
from agreements.models import Agreement
from agreements.services import AgreementInput, CheckedInput
from events.models import OutboxEvent
from events.publishing import outbox

pytestmark = pytest.mark.django_db(transaction=True)


def _input(ref: str) -> CheckedInput:
    return CheckedInput(ref, "Ada", "ada@example.com", 1999, "EUR", "month", date(2026, 1, 31))


def test_concurrent_imports_listing_refs_in_other_orders_do_not_deadlock(monkeypatch):
    # given two imports of overlapping files whose rows come in opposite orders (two exports of
    # the same upstream data, sorted differently), each writing one batch at the same moment
    refs = [f"D{i:04d}" for i in range(400)]
    one_by_one = []
    real = bulk._one_by_one
    monkeypatch.setattr(bulk, "_one_by_one", lambda rows: one_by_one.append(len(rows)) or real(rows))
    start = threading.Barrier(2)
    results: dict[str, bulk.Written] = {}

    def importer(name: str, order: list[str]) -> None:
        try:
            start.wait(5)
            results[name] = write_batch([(n + 2, _input(ref)) for n, ref in enumerate(order)])
        finally:
            connection.close()

    threads = [
        threading.Thread(target=importer, args=("up", refs)),
        threading.Thread(target=importer, args=("down", refs[::-1])),
    ]
    # (a slow disk: each row takes a few ms, so the two batches surely overlap; without it they
    # often do not, and the test passes without the ORDER BY it guards)
    with connection.cursor() as cur:
        cur.execute(
            "CREATE FUNCTION test_slow_row() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(0.005); RETURN NEW; END $$"
        )
        cur.execute(
            "CREATE TRIGGER test_slow_row BEFORE INSERT ON agreements_agreement "
            "FOR EACH ROW EXECUTE FUNCTION test_slow_row()"
        )
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        with connection.cursor() as cur:
            cur.execute("DROP TRIGGER test_slow_row ON agreements_agreement")
            cur.execute("DROP FUNCTION test_slow_row()")
    # then every row is created once, by one of them, and neither reports a row as refused
    assert Agreement.objects.count() == 400
    assert OutboxEvent.objects.filter(type="agreement.created").count() == 400
    assert results["up"].rejected == [] and results["down"].rejected == []
    assert results["up"].created + results["down"].created == 400
    # ... without a deadlock sending either batch down the slow row-by-row path
    assert one_by_one == []


def test_a_row_a_concurrent_writer_commits_is_present_not_rejected_when_going_row_by_row():
    # given another writer (a concurrent import's batch) that has inserted D2 and not committed;
    # its deadlock_timeout is long, so if the two deadlock, this import's batch is the one refused
    b_has_d2, a_started = threading.Event(), threading.Event()

    def other_writer() -> None:
        try:
            with connection.cursor() as cur:
                cur.execute("SET deadlock_timeout = '20s'")
            with transaction.atomic():
                agreements_create_many([_input("D2")])
                b_has_d2.set()
                assert a_started.wait(5)
                time.sleep(0.3)  # this import is now waiting for D2, holding D1
                agreements_create_many([_input("D1")])  # waits for D1: a deadlock, this import is refused
                time.sleep(0.5)  # the rest of its batch
        finally:
            connection.close()

    t = threading.Thread(target=other_writer)
    t.start()
    assert b_has_d2.wait(5)
    a_started.set()
    # when this import writes D1, D2 (same data as the other writer's)
    written = write_batch([(2, _input("D1")), (3, _input("D2"))])
    t.join(30)
    # then both exist once, with their event, exactly as this import would have made them ...
    assert set(Agreement.objects.values_list("external_ref", flat=True)) == {"D1", "D2"}
    assert OutboxEvent.objects.filter(type="agreement.created").count() == 2
    # ... so the import counts them present: it refuses nothing (no failed exit, no error lines)
    assert [(line, type(exc).__name__) for line, exc in written.rejected] == []
    assert (written.created, written.present) == (0, 2)


def test_the_writer_thread_checks_inputs_nobody_vouched_for_and_names_the_bad_line():
    # given a batch of inputs that did not come through the import's reader (nothing vouches for
    # them), one of them invalid, written as the import writes outside a transaction
    assert not connection.in_atomic_block
    batch = bulk.ImportBatch(size=10)
    batch.add(2, _input("V1"))
    batch.add(3, AgreementInput("V2", "Ada", "ada@example.com", 0, "EUR", "month", date(2026, 1, 31)))
    batch.add(4, AgreementInput("V3", "Bea", "bea@example.com", 500, "EUR", "month", date(2026, 1, 31)))
    # when it is written
    batch.close()
    # then the two good ones are created with their events, and the bad one is named by its line
    assert (batch.written.created, batch.written.present) == (2, 0)
    [(line, exc)] = batch.take_rejected()
    assert line == 3 and "amount_minor" in exc.message_dict
    assert set(Agreement.objects.values_list("external_ref", flat=True)) == {"V1", "V3"}
    assert OutboxEvent.objects.filter(type="agreement.created").count() == 2


def test_events_are_checked_in_the_reading_thread_and_not_ahead_once_rows_are_found_present(monkeypatch):
    # given a spy on where events are checked against their contract and made into outbox rows
    checked: list[str] = []
    real = outbox._copy_tuple  # an event checked against its contract, made into a COPY row

    def spy(event, now):  # noqa: ANN001, ANN202 - the outbox's own signature
        checked.append(threading.current_thread().name)
        return real(event, now)

    monkeypatch.setattr(outbox, "_copy_tuple", spy)

    def run(refs: list[str]) -> bulk.ImportBatch:
        batch = bulk.ImportBatch(size=2)  # as the command writes: outside a transaction
        for line, ref in enumerate(refs, start=2):
            if batch.add(line, _input(ref)):
                batch.flush()
        batch.close()
        return batch

    # when five batches of new rows are imported
    refs = [f"T{i}" for i in range(10)]
    run(refs)
    # then each event was checked once, in the reading thread: the writer thread only wrote
    assert checked == [threading.current_thread().name] * 10
    assert OutboxEvent.objects.filter(type="agreement.created").count() == 10

    # and when the same file is imported again (a re-import, the done part of a resumed one), the
    # batches read after the first was found present check no events they would not record
    checked.clear()
    again = run(refs)
    assert (again.written.created, again.written.present) == (0, 10)
    assert len(checked) <= 4  # the two batches prepared before the first came back

    # and new rows after present ones (a resumed import) are created with their events all the same
    checked.clear()
    resumed = run([*refs, "T10", "T11", "T12"])
    assert (resumed.written.created, resumed.written.present) == (3, 10)
    assert OutboxEvent.objects.filter(type="agreement.created").count() == 13
