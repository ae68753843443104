"""The HTTP gateway adapter against the shipped sandbox gateway (real HTTP on loopback)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from devsupport.sandbox_gateway import SandboxConfig, start_in_thread
from payments.gateway import HARD, SOFT, TRANSIENT, HttpGateway, maybe_charged, refused_request
from tests.factories import gateway_stats as stats


def charge(gw: HttpGateway, key: str, customer: str = "cus-1"):
    return gw.charge(idempotency_key=key, amount_minor=1000, currency="EUR", customer=customer)


def test_success_and_the_same_key_never_charges_twice(sandbox):
    gw = HttpGateway(sandbox.url)
    first = charge(gw, "inv-1#1")
    again = charge(gw, "inv-1#1")
    assert first.ok and again.ok and again.reference == first.reference and again.replayed
    assert stats(sandbox)["charges"] == 1


def test_errors_are_classified(sandbox):
    gw = HttpGateway(sandbox.url)
    assert charge(gw, "k-hard", "hard-1").error_class == HARD
    assert charge(gw, "k-soft", "soft-1").error_class == SOFT
    transient = charge(gw, "k-tr", "transient2-1")
    assert transient.error_class == TRANSIENT and transient.http_status == 503
    assert charge(gw, "k-tr", "transient2-1").error_class == TRANSIENT
    assert charge(gw, "k-tr", "transient2-1").ok  # third time lucky, charged once
    assert stats(sandbox)["charges_by_key"]["k-tr"] == 1
    down = HttpGateway("http://127.0.0.1:9", timeout=1).charge(
        idempotency_key="x", amount_minor=1, currency="EUR", customer="c"
    )
    assert down.error_class == TRANSIENT


def test_a_key_still_in_progress_at_the_gateway_is_asked_again_later_not_declined():
    # a Stripe-like gateway answers 409 to a second request with a key whose first is still open
    busy = HttpGateway._classify(409, b'{"error": {"type": "idempotency_error"}}', {})
    assert not busy.ok and busy.error_class == TRANSIENT and busy.http_status == 409


def test_lost_response_then_retry_gets_the_original_result_and_one_charge(sandbox):
    gw = HttpGateway(sandbox.url)
    lost = charge(gw, "inv-lost#1", "lost-1")
    assert not lost.ok and lost.error_class == TRANSIENT  # the connection dropped after charging
    retry = charge(gw, "inv-lost#1", "lost-1")
    assert retry.ok and retry.replayed
    assert stats(sandbox)["charges"] == 1


def test_rate_limit_answers_429_beyond_the_limit(sandbox):
    urllib.request.urlopen(
        urllib.request.Request(
            f"{sandbox.url}/v1/_config", data=json.dumps({"rate_limit": 5}).encode(), method="POST"
        )
    )
    sandbox.sandbox.tokens = 5
    gw = HttpGateway(sandbox.url)
    start = time.monotonic()
    results = [charge(gw, f"rl-{i}") for i in range(12)]
    elapsed = time.monotonic() - start
    # a full bucket of 5, plus what refilled at 5/s while the requests ran
    assert 5 <= sum(r.ok for r in results) <= 5 + int(elapsed * 5) + 1
    assert any(r.http_status == 429 for r in results)
    assert all(r.http_status == 429 for r in results if not r.ok)
    time.sleep(1.1)
    assert charge(gw, "rl-after").ok


def test_outcomes_are_deterministic_under_the_seed():
    def outcomes(seed: int) -> list[str]:
        server = start_in_thread(SandboxConfig(seed=seed, hard_decline_rate=0.2, soft_decline_rate=0.2))
        try:
            gw = HttpGateway(server.url)
            return [charge(gw, f"det-{i}").error_class or "ok" for i in range(30)]
        finally:
            server.shutdown()

    assert outcomes(3) == outcomes(3)
    assert outcomes(3) != outcomes(4)


def test_concurrent_requests_with_one_key_charge_once(sandbox):
    gw = HttpGateway(sandbox.url)
    results = []
    threads = [threading.Thread(target=lambda: results.append(charge(gw, "same"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8  # a thread that raised would leave its result out
    assert all(r.ok for r in results) and len({r.reference for r in results}) == 1
    assert stats(sandbox)["charges"] == 1


def test_refunds_give_back_at_most_what_was_charged_and_never_twice(sandbox):
    gw = HttpGateway(sandbox.url)
    charged = charge(gw, "inv-r#1")

    def refund(key: str, amount: int, reference: str = charged.reference):
        return gw.refund(idempotency_key=key, charge_reference=reference, amount_minor=amount, currency="EUR")

    part, again = refund("r-1", 400), refund("r-1", 400)
    assert part.ok and again.ok and again.reference == part.reference and again.replayed
    # more than is left, or an unknown charge: refused, and not worth retrying
    too_much, unknown = refund("r-2", 601), refund("r-3", 1, "ch_nope")
    assert too_much.error_class == HARD and "only 600 left" in too_much.message, too_much
    assert unknown.error_class == HARD
    assert refund("r-4", 600).ok
    got = stats(sandbox)
    assert got["refunds"] == 2 and got["charges_detail"][charged.reference]["refunded"] == 1000


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b'{"id": "ch_1", "status": "pending"}'),
        (200, b"<html>ok</html>"),
        (201, b'{"id": "ch_1", "status": "succeeded"}'),
        (302, b""),
        (408, b""),
    ],
)
def test_an_answer_the_protocol_does_not_give_is_transient_and_may_have_charged(status, body):
    # a proxy's page, a redirect, a status the adapter does not know: not a decline (never
    # retried, then an operator's retry with a new key), but asked again with the same key
    answer = HttpGateway._classify(status, body, {})
    assert not answer.ok and answer.error_class == TRANSIENT and maybe_charged(answer.http_status)


def test_a_refusal_of_the_request_itself_is_hard_and_a_decline_is_not_such_a_refusal():
    refused = HttpGateway._classify(401, b'{"error": {"message": "invalid API key"}}', {})
    assert refused.error_class == HARD and refused_request(refused.http_status)
    declined = HttpGateway._classify(402, b'{"error": {"decline": "hard", "message": "stolen"}}', {})
    assert declined.error_class == HARD and not refused_request(declined.http_status)


def test_an_answers_text_holding_a_nul_is_read_as_the_database_can_store_it():
    # a gateway (or something in front of it) whose decline message or charge id holds a NUL:
    # stored as it came, the answer's recording would fail, and fail again at each re-ask
    declined = HttpGateway._classify(402, b'{"error": {"decline": "soft", "message": "no\\u0000funds"}}', {})
    assert declined.error_class == SOFT and declined.message == "no\\u0000funds"
    charged = HttpGateway._classify(200, b'{"id": "ch_\\u0000", "status": "succeeded"}', {})
    assert charged.ok and charged.reference == "ch_\\u0000"
