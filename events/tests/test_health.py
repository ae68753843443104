"""Health, readiness and metrics endpoints for load balancers and Prometheus."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.db import connection

from devsupport.net import free_port
from tests.helpers import PROD_ENV, ROOT

pytestmark = pytest.mark.django_db

AUDIT_QUEUE = "billing-test-audit-events"


def test_healthz_and_readyz(client, provisioned, settings):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "sqs": "ok", "sns": "ok"}
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    settings.AWS_MAX_ATTEMPTS = 1
    down = client.get("/readyz")
    assert down.status_code == 503 and down.json()["checks"]["sqs"].startswith("error")


def test_readyz_reports_a_queue_deleted_under_it_and_recovers_once_provisioned(
    client, provisioned, delete_queue
):
    # given a ready service whose queue URLs are already looked up (and cached)
    assert client.get("/readyz").status_code == 200
    # when a consumer queue and a task queue's DLQ are deleted
    delete_queue(AUDIT_QUEUE)
    delete_queue("billing-test-celery-payments-dlq")
    # then readiness names both
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["sqs"] == f"missing: {AUDIT_QUEUE}, billing-test-celery-payments-dlq"
    # and is back once messaging_provision recreated them
    delete_queue.restore()
    assert client.get("/readyz").status_code == 200


PROBE_SETTINGS = {
    "SECURE_SSL_REDIRECT": True,
    "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
    "ALLOWED_HOSTS": ["billing.example.com"],
}


def test_probes_answer_plain_http_with_the_pod_ip_as_host(client, provisioned, settings):
    for name, value in PROBE_SETTINGS.items():
        setattr(settings, name, value)
    # a kubelet probe: plain HTTP, Host is the pod's IP
    assert client.get("/healthz", HTTP_HOST="10.0.3.7:8000").json() == {"status": "ok"}
    assert client.get("/readyz", HTTP_HOST="10.0.3.7:8000").status_code == 200
    # everything else still goes through host validation and the SSL redirect
    assert client.get("/admin/login/", HTTP_HOST="10.0.3.7:8000").status_code == 400
    assert client.get("/admin/login/", HTTP_HOST="billing.example.com").status_code == 301
    assert client.get("/metrics", HTTP_HOST="10.0.3.7:8000").status_code == 400
    assert client.post("/healthz", HTTP_HOST="10.0.3.7:8000").status_code == 400


# Runs in a process with settings.prod: a plain-HTTP probe with the pod IP as Host, and /metrics
# from loopback (a TLS proxy on the same host) without a token.
PROD_PROBE_SCRIPT = """
import json, django
django.setup()
from django.test import Client
c = Client()
print(json.dumps({
    "healthz": c.get("/healthz", HTTP_HOST="10.0.3.7:8000").status_code,
    "readyz": c.get("/readyz", HTTP_HOST="10.0.3.7:8000").status_code,
    "admin": c.get("/admin/login/", HTTP_HOST="billing.example.com").status_code,
    "metrics_from_proxy": c.get("/metrics", HTTP_HOST="billing.example.com", secure=True,
                                REMOTE_ADDR="127.0.0.1").status_code,
}))
"""


@pytest.mark.slow
def test_probes_and_metrics_under_production_settings(provisioned):
    s = connection.settings_dict
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECRET_KEY")},
        **PROD_ENV,
        "DATABASE_URL": f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST'] or '127.0.0.1'}:"
        f"{s['PORT'] or 5432}/{s['NAME']}",
    }
    result = subprocess.run(
        [sys.executable, "-c", PROD_PROBE_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "healthz": 200,
        "readyz": 200,
        "admin": 301,  # the SSL redirect still applies to everything else
        "metrics_from_proxy": 403,  # production trusts no address by default
    }


def test_metrics_from_trusted_scrapers_or_with_the_token(client, provisioned, settings):
    # development: loopback is trusted
    resp = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert resp.status_code == 200 and b"billing_events_recorded_total" in resp.content
    assert b"billing_queue_messages" in resp.content
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    # a token is accepted from anywhere; a wrong one is not
    settings.METRICS_TOKEN = "s3cret"
    ok = {"HTTP_AUTHORIZATION": "Bearer s3cret", "REMOTE_ADDR": "203.0.113.9"}
    assert client.get("/metrics", **ok).status_code == 200
    assert (
        client.get("/metrics", HTTP_AUTHORIZATION="bearer s3cret", REMOTE_ADDR="203.0.113.9").status_code
        == 200
    )
    for wrong in ("Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret", ""):
        assert client.get("/metrics", HTTP_AUTHORIZATION=wrong, REMOTE_ADDR="203.0.113.9").status_code == 401


def test_metrics_in_production_need_the_token_even_from_the_proxys_loopback(client, provisioned, settings):
    # given production's default: no trusted scraper (a TLS proxy on the host connects from loopback)
    settings.METRICS_TRUSTED_SCRAPERS = []
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    assert (
        client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200
    )
    # X-Forwarded-For is never believed
    assert (
        client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 401
    )


def test_metrics_trusted_scrapers_by_address_or_network(client, provisioned, settings):
    settings.METRICS_TRUSTED_SCRAPERS = ["10.20.0.0/16", "192.0.2.10"]
    assert client.get("/metrics", REMOTE_ADDR="10.20.3.4").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:10.20.3.4").status_code == 200  # dual-stack socket
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.10").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.11").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="not-an-ip").status_code == 403


def test_a_malformed_trusted_scraper_is_refused_at_startup(settings):
    from events.checks import check_messaging_settings

    assert "billing.E005" not in [e.id for e in check_messaging_settings()]
    settings.METRICS_TRUSTED_SCRAPERS = ["10.0.0.0/33"]
    assert "billing.E005" in [e.id for e in check_messaging_settings()]
