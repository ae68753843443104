"""Concurrent writers of the same external_refs (two imports, an import and the admin), and the
import's writer thread."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from datetime import date

import pytest
from django.db import connection, transaction

from agreements import bulk, import_batch, importing
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


def test_the_writer_checks_inputs_nobody_vouched_for_and_names_the_bad_line():
    # given inputs that did not come through the import's reader (nothing vouches for them: made
    # elsewhere, or unpickled from a preparing process), one of them invalid, and nothing prepared
    assert not connection.in_atomic_block
    rows = [
        (2, _input("V1")),
        (3, AgreementInput("V2", "Ada", "ada@example.com", 0, "EUR", "month", date(2026, 1, 31))),
        (4, AgreementInput("V3", "Bea", "bea@example.com", 500, "EUR", "month", date(2026, 1, 31))),
    ]
    # when they are written as the import's writer writes a batch
    written = write_batch(rows)
    # then the two good ones are created with their events, and the bad one is named by its line
    assert (written.created, written.present) == (2, 0)
    [(line, exc)] = written.rejected
    assert line == 3 and "amount_minor" in exc.message_dict
    assert set(Agreement.objects.values_list("external_ref", flat=True)) == {"V1", "V3"}
    assert OutboxEvent.objects.filter(type="agreement.created").count() == 2


def _line(ref: str, amount: object = 1999, name: str = "Ada") -> dict[str, object]:
    """A line as the import reads it (CSV's strings)."""
    return {
        "external_ref": ref,
        "customer_name": name,
        "customer_email": "ada@example.com",
        "amount_minor": str(amount),
        "currency": "EUR",
        "interval": "month",
        "start_date": "2026-01-31",
    }


def _import(lines: list[object], size: int, preparers: int) -> import_batch.ImportBatch:
    """The lines through an ImportBatch as the command drives it, outside a transaction."""
    assert not connection.in_atomic_block
    batch = import_batch.ImportBatch(size=size, preparers=preparers)
    for n, row in enumerate(lines, start=2):
        if batch.add(n, row):
            batch.flush()
    batch.close()
    return batch


def test_lines_made_in_preparing_processes_are_judged_in_line_order_across_batches(tmp_path, monkeypatch):
    # given a spy on where events are checked and made into outbox rows, which writes down the
    # process (a preparer's memory is its own)
    pids = tmp_path / "pids"
    real = outbox._copy_tuple

    def spy(event, now):  # noqa: ANN001, ANN202 - the outbox's own signature
        with pids.open("a") as f:
            f.write(f"{os.getpid()}\n")
        return real(event, now)

    monkeypatch.setattr(outbox, "_copy_tuple", spy)
    # and a rule only the database knows, which line 3 breaks
    with connection.cursor() as cur:
        cur.execute(
            "ALTER TABLE agreements_agreement ADD CONSTRAINT test_no_zed CHECK (customer_name <> 'Zed')"
        )
    # and lines in batches of 3 where each kind of repeat and refusal falls in another batch than
    # the line it concerns
    lines = [
        _line("P1"), _line("P2"), _line("P3", name="Zed"),  # lines 2-4; the database refuses 4
        _line("P1"),  # 5: the same as line 2: skipped
        _line("P3"),  # 6: line 4's ref with other data: refused, naming line 4 (not created)
        _line("P4"),  # 7
        _line("P5", amount=0),  # 8: the services refuse it
        importing.RowError("not CSV: unexpected end of data"),  # 9: could not even be read
        _line("P6"), _line("P6"),  # 10, 11: a repeat inside one batch
    ]  # fmt: skip
    # when they are imported with two preparing processes
    try:
        batch = _import(lines, size=3, preparers=2)
    finally:
        with connection.cursor() as cur:
            cur.execute("ALTER TABLE agreements_agreement DROP CONSTRAINT test_no_zed")
    # then each new ref is created once with its event, the lines refused are named in line order,
    # and the exact repeats are counted as present
    assert set(Agreement.objects.values_list("external_ref", flat=True)) == {"P1", "P2", "P4", "P6"}
    assert OutboxEvent.objects.filter(type="agreement.created").count() == 4
    refused = [(line, str(exc)) for line, exc in batch.take_rejected()]
    assert [line for line, _ in refused] == [4, 6, 8, 9]
    assert "test_no_zed" in refused[0][1] and "already on line 4 with different data" in refused[1][1]
    assert "amount_minor" in refused[2][1] and "not CSV" in refused[3][1]
    assert (batch.written.created, batch.written.present, batch.repeated) == (4, 0, 2)
    # ... and events were made in the preparing processes (and here only for the batch the
    # database refused, which the writer thread wrote again row by row)
    made_in = pids.read_text().split()
    assert made_in.count(str(os.getpid())) == 3  # P1, P2 and the refused P3, one at a time
    assert len(made_in) > 3


def _slow_make(lines, events_too):  # noqa: ANN001, ANN202 - import_batch.make's own signature
    time.sleep(0.5)  # a preparer is surely holding the batch when the test kills it
    return _real_make(lines, events_too)


_real_make = import_batch.make


def test_a_preparing_process_that_dies_costs_nothing_but_speed(caplog, monkeypatch):
    # given an import with one preparing process, which is killed while it makes the first batch
    monkeypatch.setattr(import_batch, "make", _slow_make)
    caplog.set_level(logging.WARNING, logger="agreements.import_batch")  # whatever the root's level
    batch = import_batch.ImportBatch(size=2, preparers=1)
    for n in range(2):
        batch.add(n + 2, _line(f"K{n}"))
    batch.flush()
    [preparer] = multiprocessing.active_children()
    os.kill(preparer.pid, signal.SIGKILL)
    preparer.join(10)
    # when the import goes on
    for n in range(2, 9):
        if batch.add(n + 2, _line(f"K{n}")):
            batch.flush()
    batch.close()
    # then every line is created once, with its event (the batch it held made again here), and
    # the loss is logged
    assert (batch.written.created, batch.rejected, batch.take_rejected()) == (9, 0, [])
    assert Agreement.objects.count() == 9
    assert OutboxEvent.objects.filter(type="agreement.created").count() == 9
    assert "preparing the import's batches stopped" in caplog.text
    assert multiprocessing.active_children() == []


def test_a_ctrl_c_while_a_batch_is_judged_loses_no_line_and_counts_none_twice(monkeypatch, ctrl_c_raises):
    # given a Ctrl-C that arrives while the second batch's lines are judged (repeats, line order)
    calls = []
    real_add = importing.SeenRefs.add

    def add(self, line, data):  # noqa: ANN001, ANN202 - SeenRefs.add's own signature
        calls.append(line)
        if len(calls) == 6:
            signal.raise_signal(signal.SIGINT)
        return real_add(self, line, data)

    monkeypatch.setattr(importing.SeenRefs, "add", add)
    batch = import_batch.ImportBatch(size=4, preparers=1)
    read = 0
    # when the import reads on until the Ctrl-C, then writes what it read (as the command does)
    with pytest.raises(KeyboardInterrupt):
        for n in range(40):
            read += 1
            if batch.add(n + 2, _line(f"C{n}")):
                batch.flush()
    batch.close()
    # then every line read is created once, none counted as a repeat of itself
    assert Agreement.objects.count() == read
    assert (batch.written.created, batch.repeated, batch.rejected) == (read, 0, 0)
    assert OutboxEvent.objects.filter(type="agreement.created").count() == read


def test_without_preparers_events_are_made_in_the_reading_thread_and_not_ahead_once_rows_are_present(
    monkeypatch,
):
    # given a spy on where events are checked against their contract and made into outbox rows
    checked: list[str] = []
    real = outbox._copy_tuple  # an event checked against its contract, made into a COPY row

    def spy(event, now):  # noqa: ANN001, ANN202 - the outbox's own signature
        checked.append(threading.current_thread().name)
        return real(event, now)

    monkeypatch.setattr(outbox, "_copy_tuple", spy)

    def run(refs: list[str]) -> import_batch.ImportBatch:
        return _import([_line(ref) for ref in refs], size=2, preparers=0)

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


def test_a_batch_of_huge_lines_ends_before_it_holds_too_much():
    # given lines each holding about a quarter of what a batch may (a hostile or broken file)
    huge = "x" * (import_batch.BATCH_MAX_CHARS // 4)
    batch = import_batch.ImportBatch(size=2000, preparers=0)
    # when they are added, the batch says it is full at the fourth, not at its 2,000th line
    full = [batch.add(n + 2, {**_line(f"H{n}"), "description": huge}) for n in range(4)]
    assert full == [False, False, False, True]
    batch.flush()
    assert not batch.add(6, _line("H4"))  # and it starts counting afresh
    batch.close()
    # and the long descriptions are refused by line, the short one created
    assert [line for line, _ in batch.take_rejected()] == [2, 3, 4, 5]
    assert (batch.written.created, batch.rejected) == (1, 4)
