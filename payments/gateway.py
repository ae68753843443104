"""The payment gateway behind one small interface, chosen by settings.

``charge(idempotency_key, amount_minor, currency, customer) -> ChargeResult`` and
``refund(idempotency_key, charge_reference, amount_minor, currency) -> ChargeResult``; errors are
classified as ``hard_decline`` (not retried: the payment fails, unless an earlier try with the
key may have charged: services/answers.py), ``soft_decline`` (dunning schedule) or
``transient`` (timeouts, connection errors, 5xx, 429, 408, 409: a request with the same key still
in progress, as when a stale charge is asked again while its first request hangs, and any answer
the protocol does not give: retry with backoff, the same key). The HTTP adapter
speaks the sandbox's Stripe-like protocol; a real provider gets its own adapter class and
the setting ``PAYMENT_GATEWAY`` names it. Tests exercise this same HTTP code path against
the sandbox (devsupport/sandbox_gateway.py).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace
from typing import Any, Protocol

import urllib3
from django.conf import settings
from django.db.models import Q
from django.utils.module_loading import import_string

from core.fields import storable

HARD, SOFT, TRANSIENT = "hard_decline", "soft_decline", "transient"


_MAYBE_CHARGED = (0, 408, 409)


def maybe_charged(status: int) -> bool:
    """Whether a transient error with this HTTP status leaves open that the gateway charged: no
    answer at all (a timeout, a dropped connection: status 0), 409 (its first request with the
    same key still in progress), 408 (something in front of it gave up waiting) or an answer
    this adapter does not understand (a 2xx that is not a plain success, a redirect). Only asking
    again with the key tells. Any other answer (429, 5xx) took nothing."""
    return status in _MAYBE_CHARGED or 100 <= status < 400


def maybe_charged_try() -> Q:
    """``maybe_charged`` for a query over tries (PaymentAttempt): one never answered (in flight, or
    its worker died), or answered transiently with such a status."""
    unclear = Q(http_status__in=_MAYBE_CHARGED) | Q(http_status__gte=100, http_status__lt=400)
    return Q(finished_at__isnull=True) | (Q(outcome=TRANSIENT) & unclear)


def refused_request(status: int) -> bool:
    """Whether a decline with this HTTP status refused our request itself (a key, a field: a 4xx
    other than 402, the decline of the charge) rather than the charge: it tells nothing of what an
    earlier try with the same key did. (408, 409 and 429 are never declines: transient.)"""
    return 400 <= status < 500 and status != 402


@dataclass(frozen=True)
class ChargeResult:
    ok: bool
    reference: str = ""
    error_class: str = ""  # hard_decline | soft_decline | transient
    message: str = ""
    http_status: int = 0
    replayed: bool = False


class Gateway(Protocol):
    def charge(
        self, *, idempotency_key: str, amount_minor: int, currency: str, customer: str
    ) -> ChargeResult: ...

    def refund(
        self, *, idempotency_key: str, charge_reference: str, amount_minor: int, currency: str
    ) -> ChargeResult: ...


class HttpGateway:
    """A Stripe-like JSON API: POST {base}/v1/charges with an Idempotency-Key header."""

    def __init__(
        self, base_url: str, *, api_key: str = "", timeout: float = 10.0, pool_size: int = 32
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.http = urllib3.PoolManager(
            maxsize=pool_size,
            block=True,
            retries=False,  # retries are the caller's decision (backoff, dunning)
            timeout=urllib3.Timeout(connect=min(3.0, timeout), read=timeout),
        )

    def charge(
        self, *, idempotency_key: str, amount_minor: int, currency: str, customer: str
    ) -> ChargeResult:
        body = {"amount_minor": amount_minor, "currency": currency, "customer": customer}
        return self._post("/v1/charges", idempotency_key, body)

    def refund(
        self, *, idempotency_key: str, charge_reference: str, amount_minor: int, currency: str
    ) -> ChargeResult:
        """Give back ``amount_minor`` of the charge ``charge_reference`` (all or part of it)."""
        body = {"charge": charge_reference, "amount_minor": amount_minor, "currency": currency}
        return self._post("/v1/refunds", idempotency_key, body)

    def _post(self, path: str, idempotency_key: str, body: dict[str, Any]) -> ChargeResult:
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            resp = self.http.request("POST", f"{self.base_url}{path}", body=json.dumps(body), headers=headers)
        except urllib3.exceptions.HTTPError as exc:
            # Timeouts, refused or dropped connections: the operation may or may not have
            # happened; retrying with the same key is safe (the gateway replays it).
            return ChargeResult(False, error_class=TRANSIENT, message=f"{type(exc).__name__}: {exc}"[:500])
        return self._classify(resp.status, resp.data, resp.headers)

    @staticmethod
    def _classify(status: int, raw: bytes, headers: Any) -> ChargeResult:
        """The answer as a ChargeResult, its texts as the database can store them: a message or a
        reference holding a NUL would fail the answer's recording, again at each re-ask (the
        gateway replays it), and leave a charge that may have succeeded unrecorded."""
        result = HttpGateway._read_answer(status, raw, headers)
        return replace(result, message=storable(result.message, 500), reference=storable(result.reference))

    @staticmethod
    def _read_answer(status: int, raw: bytes, headers: Any) -> ChargeResult:
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            data = {}
        error = data.get("error", {}) if isinstance(data, dict) else {}
        replayed = headers.get("Idempotent-Replayed") == "true"
        if status == 200 and isinstance(data, dict) and data.get("status") == "succeeded":
            return ChargeResult(True, reference=str(data.get("id", "")), http_status=200, replayed=replayed)
        if status == 402:
            kind = HARD if error.get("decline") == "hard" else SOFT
            return ChargeResult(
                False,
                error_class=kind,
                message=str(error.get("message", "declined"))[:500],
                http_status=402,
                replayed=replayed,
            )
        if status in (408, 409, 429) or status >= 500:  # 409: a request with this key is still in progress
            return ChargeResult(
                False,
                error_class=TRANSIENT,
                http_status=status,
                message=f"HTTP {status}: {error.get('type', '')}".strip(),
            )
        if status < 400:
            # Not the answer the protocol gives (a success is 200 "succeeded"): something else
            # answered, or the gateway changed. It may have charged: asked again with the key.
            return ChargeResult(
                False,
                error_class=TRANSIENT,
                http_status=status,
                message=f"HTTP {status}: an answer this adapter does not understand: {raw[:200]!r}",
            )
        # 4xx other than 402/408/409/429: our request is wrong (a key, a field); retrying as it is
        # cannot help. It says nothing of an earlier try with the key (charging.outcome_unknown).
        return ChargeResult(
            False,
            error_class=HARD,
            http_status=status,
            message=f"HTTP {status}: {error.get('message', raw[:200])}",
        )


_lock = threading.Lock()
_gateway: Gateway | None = None


def gateway() -> Gateway:
    """The configured gateway, created once per process."""
    global _gateway
    with _lock:
        if _gateway is None:
            cls = import_string(settings.PAYMENT_GATEWAY)
            _gateway = cls(
                settings.PAYMENT_GATEWAY_URL,
                api_key=settings.PAYMENT_GATEWAY_API_KEY,
                timeout=settings.PAYMENT_GATEWAY_TIMEOUT,
            )
        return _gateway


def reset_gateway() -> None:
    global _gateway
    with _lock:
        _gateway = None
