"""The shared token bucket holds the rate across threads (each with its own DB connection)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from payments.ratelimit import acquire


@pytest.mark.django_db(transaction=True)
def test_many_threads_together_never_exceed_the_rate():
    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            for _ in range(10):
                assert acquire("test", rate=50)
                with lock:
                    stamps.append(time.monotonic())
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    # 80 tokens at 50/s with a burst of 25: at least (80 - 25) / 50 = 1.1 s
    assert len(stamps) == 80 and elapsed >= 1.0
    # and in no one-second window more than rate + burst
    stamps.sort()
    assert max(sum(1 for s in stamps if t0 <= s < t0 + 1) for t0 in stamps) <= 50 + 25 + 1


@pytest.mark.django_db(transaction=True)
def test_a_wait_beyond_the_timeout_gives_the_token_back():
    for _ in range(2):
        acquire("slow", rate=1)
    for _ in range(5):  # each would wait about a second: refused at once
        assert acquire("slow", rate=1, timeout=0.1) is False
    # the refused callers took nothing: the balance is where the two served ones left it
    # (kept, it would be 5 tokens deeper in debt and the next caller would wait 6 s, not 1)
    with connection.cursor() as cur:
        cur.execute("SELECT tokens FROM payments_ratelimitbucket WHERE name = 'slow'")
        assert float(cur.fetchone()[0]) > -1.5


@pytest.mark.django_db(transaction=True)
def test_a_reservation_in_a_rolled_back_transaction_takes_nothing():
    from django.db import transaction

    from payments.ratelimit import reserve, wait

    assert reserve("claim", rate=1) == 0  # the burst's one token
    with transaction.atomic():
        due_in = reserve("claim", rate=1)  # the next one is a second away
        assert 0.5 < due_in <= 1.0
        transaction.set_rollback(True)  # the claim found nothing to charge after all
    # the rolled-back reservation left the bucket as it was: the next caller waits one second, not two
    with transaction.atomic():
        due_in = reserve("claim", rate=1)
    assert 0.5 < due_in <= 1.0 and wait("claim", due_in, timeout=0.1) is False
    with connection.cursor() as cur:  # and the refused one gave its token back
        cur.execute("SELECT tokens FROM payments_ratelimitbucket WHERE name = 'claim'")
        assert float(cur.fetchone()[0]) > -0.5


@pytest.mark.django_db(transaction=True)
def test_a_charge_reserves_its_token_in_the_transaction_that_claims_it(sandbox, settings, monkeypatch):
    from django.test.utils import CaptureQueriesContext

    from payments.dispatch import charge_kicker
    from payments.services import payment_charge, payment_create_for_invoice
    from tests.factories import invoice_data

    monkeypatch.setattr(charge_kicker, "enabled", lambda: False)
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 100
    payment, _ = payment_create_for_invoice(data=invoice_data("cus-ok"))
    with CaptureQueriesContext(connection) as queries:
        assert payment_charge(payment_id=str(payment.pk)) == "succeeded"
    statements = [q["sql"].strip() for q in queries.captured_queries]
    reserved = [i for i, s in enumerate(statements) if s.startswith("INSERT INTO payments_ratelimitbucket")]
    commits = [i for i, s in enumerate(statements) if s == "COMMIT"]
    # one token, reserved inside the claim's transaction (its first commit): no commit of its own
    # (an autocommit statement's is not logged as one), so a charge costs the database two, not three
    assert len(reserved) == 1 and len(commits) == 2 and reserved[0] < commits[0], statements
