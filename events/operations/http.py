"""The backbone's operational HTTP endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import hmac
import ipaddress
import os
import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

from .counts import outbox_stats
from .health import readiness
from .observations import queue_stats


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process is up and serving requests."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness (the health model's ``readiness()``): PostgreSQL answers, every queue and DLQ of the
    topology exists, SNS answers. 503 with the failing part otherwise."""
    parts = readiness()
    ok = all(v == "ok" for v in parts.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": parts}, status=200 if ok else 503)


_gauges_refreshed = 0.0


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics, for a caller with the token (METRICS_TOKEN) or a trusted scraper."""
    refused = _metrics_refusal(request)
    if refused is not None:
        return refused
    global _gauges_refreshed
    if time.monotonic() - _gauges_refreshed > 15:  # queue depths and outbox backlog, at most every 15 s
        _gauges_refreshed = time.monotonic()
        try:
            queue_stats(with_age=False)
            outbox_stats()
        except Exception:  # noqa: BLE001 - stale gauges beat a failed scrape
            pass
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = DEFAULT_REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the caller may read /metrics, else the 401/403 answer saying what is needed.

    Allowed: the right ``Authorization: Bearer <METRICS_TOKEN>`` (compared in constant time), or a
    connection from an address in METRICS_TRUSTED_SCRAPERS. Only REMOTE_ADDR counts, never
    X-Forwarded-For: behind a TLS proxy REMOTE_ADDR is the proxy's, which is why production trusts
    no address by default (development trusts loopback).
    """
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
    if _trusted_scraper(request.META.get("REMOTE_ADDR", "")):
        return None
    if token:
        return HttpResponse("metrics need 'Authorization: Bearer <METRICS_TOKEN>'\n", status=401)
    return HttpResponse(
        "metrics are served to METRICS_TRUSTED_SCRAPERS only; set it or METRICS_TOKEN\n", status=403
    )


def _trusted_scraper(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:  # a dual-stack socket's IPv4 peer
        ip = ip.ipv4_mapped
    for net in settings.METRICS_TRUSTED_SCRAPERS:
        try:
            if ip in ipaddress.ip_network(net, strict=False):  # strict=False accepts host bits
                return True
        except ValueError:
            continue  # reported by check billing.E005; a bad entry trusts no one
    return False
