"""Health, readiness and metrics endpoints for load balancers and Prometheus."""

from __future__ import annotations

import pytest

from scripts.devstack import free_port

pytestmark = pytest.mark.django_db


def test_healthz_and_readyz(client, provisioned, settings):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "sqs": "ok", "sns": "ok"}
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    settings.AWS_MAX_ATTEMPTS = 1
    down = client.get("/readyz")
    assert down.status_code == 503 and down.json()["checks"]["sqs"].startswith("error")


def test_metrics_loopback_only_or_with_token(client, provisioned, settings):
    resp = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert resp.status_code == 200 and b"billing_events_recorded_total" in resp.content
    assert b"billing_queue_messages" in resp.content
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    assert (
        client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret", REMOTE_ADDR="203.0.113.9").status_code
        == 200
    )
