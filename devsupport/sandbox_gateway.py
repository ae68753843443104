"""A sandbox payment gateway: a small HTTP service on loopback, shipped for `make run` and tests.

    python -m devsupport.sandbox_gateway --port 8765 --latency-ms 200 --rate-limit 100 --seed 7

POST /v1/charges  (JSON {amount_minor, currency, customer}, header Idempotency-Key)
  200 {"id": "ch_...", "status": "succeeded"}
POST /v1/refunds  (JSON {charge, amount_minor, currency}, header Idempotency-Key)
  200 {"id": "re_...", "status": "succeeded"}; 400 for an unknown charge or more than is left
  402 {"error": {"type": "card_declined", "decline": "hard"|"soft", "message": ...}}
  429 {"error": {"type": "rate_limited"}}  (Retry-After: 1) when over --rate-limit per second
  500/503 {"error": {"type": "api_error"}}  (transient)
GET  /v1/_stats   counts: charges made (succeeded), requests, rate limited, replays, per key,
                  the most charges answered at once;
                  refunds, and per charge: its key, amount and how much was refunded
POST /v1/_config  change latency, rates, limit at run time (tests)

Like Stripe, the same Idempotency-Key returns the first result and never charges twice.
Outcomes are deterministic under the seed: they depend only on (seed, key), not on timing.
Test hooks by customer reference: ``hard-*`` always hard-declines, ``soft-*`` soft-declines,
``softN-*`` soft-declines the first N keys' attempts (by the key's ``#attempt`` suffix),
``transientN-*`` fails with 503 N times for a key then succeeds, ``lost-*`` charges and then
drops the connection without answering (the first time for a key).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class SandboxConfig:
    latency_ms: int = 0
    rate_limit: float = 0.0  # charges per second; 0 = unlimited
    hard_decline_rate: float = 0.0
    soft_decline_rate: float = 0.0
    transient_rate: float = 0.0
    seed: int = 0


class Sandbox:
    """The gateway's state: idempotency records, counters, a token bucket."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.results: dict[str, tuple[int, dict[str, Any]]] = {}
        self.key_locks: dict[str, threading.Lock] = {}
        self.transient_seen: dict[str, int] = {}
        self.dropped: set[str] = set()
        self.stats: dict[str, Any] = {
            "requests": 0,
            "charges": 0,
            "most_at_once": 0,  # charges answered at the same moment, at most
            "rate_limited": 0,
            "replays": 0,
            "declines": 0,
            "errors": 0,
            "charges_by_key": {},
            "refunds": 0,
            "refunds_by_key": {},
            "charges_detail": {},  # charge id -> {"key", "amount", "refunded"}
        }
        self.tokens = config.rate_limit
        self.in_flight = 0
        self.refilled_at = time.monotonic()

    # -- rate limit ---------------------------------------------------------
    def take_token(self) -> bool:
        if self.config.rate_limit <= 0:
            return True
        with self.lock:
            now = time.monotonic()
            self.tokens = min(
                self.config.rate_limit, self.tokens + (now - self.refilled_at) * self.config.rate_limit
            )
            self.refilled_at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            self.stats["rate_limited"] += 1
            return False

    # -- outcome ------------------------------------------------------------
    def _roll(self, key: str) -> float:
        digest = hashlib.sha256(f"{self.config.seed}:{key}".encode()).digest()
        return random.Random(digest).random()

    def decide(self, key: str, customer: str) -> tuple[int, dict[str, Any]] | str:
        """The outcome for a new key: (status, body), or "drop" to charge and hang up."""
        base_key = key.split("#", 1)[0]
        attempt = int(key.split("#", 1)[1]) if "#" in key and key.split("#", 1)[1].isdigit() else 1
        if customer.startswith("hard-"):
            return self._decline("hard")
        if customer.startswith("soft-"):
            return self._decline("soft")
        if customer.startswith("soft") and "-" in customer:
            n = customer[4 : customer.index("-")]
            if n.isdigit() and attempt <= int(n):
                return self._decline("soft")
        if customer.startswith("transient") and "-" in customer:
            n = customer[9 : customer.index("-")]
            seen = self.transient_seen.get(key, 0)
            if n.isdigit() and seen < int(n):
                self.transient_seen[key] = seen + 1
                return 503, {"error": {"type": "api_error", "message": "sandbox: try again"}}
        if customer.startswith("lost-") and base_key not in self.dropped:
            self.dropped.add(base_key)
            return "drop"
        roll = self._roll(key)
        c = self.config
        if roll < c.hard_decline_rate:
            return self._decline("hard")
        if roll < c.hard_decline_rate + c.soft_decline_rate:
            return self._decline("soft")
        if (
            roll < c.hard_decline_rate + c.soft_decline_rate + c.transient_rate
            and key not in self.transient_seen
        ):
            self.transient_seen[key] = 1
            return 500, {"error": {"type": "api_error", "message": "sandbox: internal error"}}
        return self._succeed(key)

    def _decline(self, kind: str) -> tuple[int, dict[str, Any]]:
        message = "card was declined (stolen card)" if kind == "hard" else "insufficient funds"
        return 402, {"error": {"type": "card_declined", "decline": kind, "message": message}}

    def _succeed(self, key: str) -> tuple[int, dict[str, Any]]:
        charge_id = "ch_" + hashlib.sha256(f"{self.config.seed}:{key}:charge".encode()).hexdigest()[:20]
        return 200, {"id": charge_id, "status": "succeeded"}

    def record(self, key: str, status: int, body: dict[str, Any], *, final: bool, amount: int = 0) -> None:
        with self.lock:
            if status == 200:
                self.stats["charges"] += 1
                by_key = self.stats["charges_by_key"]
                by_key[key] = by_key.get(key, 0) + 1
                self.stats["charges_detail"][body["id"]] = {"key": key, "amount": amount, "refunded": 0}
            elif status == 402:
                self.stats["declines"] += 1
            else:
                self.stats["errors"] += 1
            if final:
                self.results[key] = (status, body)

    def refund(self, key: str, charge: str, amount: int) -> tuple[int, dict[str, Any], bool]:
        """Refund ``amount`` of ``charge`` (idempotent by ``key``): (status, body, replayed)."""
        with self.lock:
            if key in self.results:
                self.stats["replays"] += 1
                return (*self.results[key], True)
            detail = self.stats["charges_detail"].get(charge)
            if detail is None:
                return 400, {"error": {"type": "invalid_request", "message": f"no charge {charge}"}}, False
            if amount > detail["amount"] - detail["refunded"]:
                left = detail["amount"] - detail["refunded"]
                return (
                    400,
                    {"error": {"type": "invalid_request", "message": f"only {left} left to refund"}},
                    False,
                )
            detail["refunded"] += amount
            self.stats["refunds"] += 1
            self.stats["refunds_by_key"][key] = self.stats["refunds_by_key"].get(key, 0) + 1
            digest = hashlib.sha256(f"{self.config.seed}:{key}:refund".encode()).hexdigest()[:20]
            result = (200, {"id": "re_" + digest, "status": "succeeded", "charge": charge})
            self.results[key] = result
            return (*result, False)

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """A charge being answered: counts the most answered at once (``most_at_once``)."""
        with self.lock:
            self.in_flight += 1
            self.stats["most_at_once"] = max(self.stats["most_at_once"], self.in_flight)
        try:
            yield
        finally:
            with self.lock:
                self.in_flight -= 1

    def key_lock(self, key: str) -> threading.Lock:
        with self.lock:
            return self.key_locks.setdefault(key, threading.Lock())


class Handler(BaseHTTPRequestHandler):
    server: SandboxServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: without TCP_NODELAY the body waits for the client's
    # delayed ACK of the headers, 40 ms per call on Linux, which no real gateway adds.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length", 0))
        data = json.loads(self.rfile.read(length) or b"{}")
        return data if isinstance(data, dict) else {}

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        sandbox = self.server.sandbox
        if self.path == "/v1/_stats":
            with sandbox.lock:
                self._send(200, json.loads(json.dumps(sandbox.stats)))
        elif self.path == "/healthz":
            self._send(200, {"status": "ok", "config": asdict(sandbox.config)})
        else:
            self._send(404, {"error": {"type": "not_found"}})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        sandbox = self.server.sandbox
        if self.path == "/v1/_config":
            for k, v in self._body().items():
                if hasattr(sandbox.config, k):
                    setattr(sandbox.config, k, type(getattr(sandbox.config, k))(v))
            self._send(200, asdict(sandbox.config))
            return
        if self.path == "/v1/refunds":
            self._refund()
            return
        if self.path != "/v1/charges":
            self._send(404, {"error": {"type": "not_found"}})
            return
        try:
            body = self._body()
            amount, currency = int(body["amount_minor"]), str(body["currency"])
            customer = str(body.get("customer", ""))
        except (ValueError, KeyError, TypeError):
            self._send(
                400, {"error": {"type": "invalid_request", "message": "amount_minor, currency required"}}
            )
            return
        key = self.headers.get("Idempotency-Key", "")
        if not key or amount <= 0 or len(currency) != 3:
            self._send(400, {"error": {"type": "invalid_request", "message": "Idempotency-Key, amount > 0"}})
            return
        with sandbox.lock:
            sandbox.stats["requests"] += 1
        if not sandbox.take_token():
            self._send(429, {"error": {"type": "rate_limited"}}, {"Retry-After": "1"})
            return
        with sandbox.answering():
            self._charge(sandbox, key, customer, amount)

    def _charge(self, sandbox: Sandbox, key: str, customer: str, amount: int) -> None:
        if sandbox.config.latency_ms:
            time.sleep(sandbox.config.latency_ms / 1000)
        with sandbox.key_lock(key):
            if key in sandbox.results:
                with sandbox.lock:
                    sandbox.stats["replays"] += 1
                status, result = sandbox.results[key]
                self._send(status, result, {"Idempotent-Replayed": "true"})
                return
            outcome = sandbox.decide(key, customer)
            if outcome == "drop":
                status, result = sandbox._succeed(key)
                sandbox.record(key, status, result, final=True, amount=amount)  # charged...
                self.close_connection = True
                self.connection.shutdown(2)  # ...but the reply is lost
                return
            status, result = outcome  # type: ignore[misc]
            sandbox.record(key, status, result, final=status in (200, 402), amount=amount)
        self._send(status, result)

    def _refund(self) -> None:
        sandbox = self.server.sandbox
        try:
            body = self._body()
            charge, amount = str(body["charge"]), int(body["amount_minor"])
        except (ValueError, KeyError, TypeError):
            self._send(
                400, {"error": {"type": "invalid_request", "message": "charge, amount_minor required"}}
            )
            return
        key = self.headers.get("Idempotency-Key", "")
        if not key or amount <= 0:
            self._send(400, {"error": {"type": "invalid_request", "message": "Idempotency-Key, amount > 0"}})
            return
        with sandbox.lock:
            sandbox.stats["requests"] += 1
        if sandbox.config.latency_ms:
            time.sleep(sandbox.config.latency_ms / 1000)
        status, result, replayed = sandbox.refund(key, charge, amount)
        self._send(status, result, {"Idempotent-Replayed": "true"} if replayed else None)


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog is 5: workers opening their connections together (a list's
    # charges go out together) had some reset before they were accepted, as no real gateway does
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], config: SandboxConfig) -> None:
        super().__init__(address, Handler)
        self.sandbox = Sandbox(config)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-request (a killed worker) is routine: one line, no traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            logger.info("sandbox: client %s went away: %s", client_address, exc)
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def start_in_thread(config: SandboxConfig | None = None, port: int = 0) -> SandboxServer:
    """Start a sandbox on 127.0.0.1 (a free port by default) in a daemon thread (tests)."""
    server = SandboxServer(("127.0.0.1", port), config or SandboxConfig())
    threading.Thread(target=server.serve_forever, name="sandbox-gateway", daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description="Sandbox payment gateway on loopback.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--rate-limit", type=float, default=0.0, help="charges per second; 0 = unlimited")
    parser.add_argument("--hard-decline-rate", type=float, default=0.0)
    parser.add_argument("--soft-decline-rate", type=float, default=0.0)
    parser.add_argument("--transient-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    config = SandboxConfig(
        a.latency_ms, a.rate_limit, a.hard_decline_rate, a.soft_decline_rate, a.transient_rate, a.seed
    )
    server = SandboxServer(("127.0.0.1", a.port), config)
    print(f"sandbox gateway on {server.url} ({asdict(config)})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
