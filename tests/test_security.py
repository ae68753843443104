"""Security: CSRF on admin actions, inert SQL/HTML in search, no secrets in logs or events."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import transaction
from django.test import Client

from events import contracts
from events.models import ApiToken, OutboxEvent
from events.outbox import record_event
from tests.factories import agreement_data

pytestmark = pytest.mark.django_db


def test_admin_actions_need_a_csrf_token():
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_superuser("op", password="pw"))
    resp = client.post("/admin/payments/payment/", {"action": "retry_now", "_selected_action": ["x"]})
    assert resp.status_code == 403 and b"CSRF" in resp.content
    assert client.post("/admin/messaging/", {"redrive": "payments"}).status_code == 403


def test_sql_and_html_in_admin_search_stay_inert(client):
    client.force_login(User.objects.create_superuser("op", password="pw"))
    with transaction.atomic():
        record_event(
            sender=None,
            type=contracts.AGREEMENT_CREATED,
            aggregate_id="safe",
            aggregate_version=1,
            data=agreement_data("safe"),
        )
    for q in ["'; DROP TABLE events_outboxevent; --", "<script>alert(1)</script>", "' OR '1'='1"]:
        for url in (
            "/admin/events/outboxevent/",
            "/admin/agreements/agreement/",
            "/admin/invoicing/invoice/",
            "/admin/payments/payment/",
        ):
            resp = client.get(url, {"q": q})
            assert resp.status_code == 200
            assert "<script>alert(1)</script>" not in resp.content.decode()
    assert OutboxEvent.objects.count() == 1  # the table is still there, untouched


def test_api_tokens_never_reach_logs_or_events(client, caplog, capsys):
    call_command("api_token_create", "svc")
    token = capsys.readouterr().out.strip()
    with caplog.at_level(logging.DEBUG):
        client.get("/api/events/", HTTP_AUTHORIZATION=f"Bearer {token}")
        client.get("/api/events/", HTTP_AUTHORIZATION="Bearer wrong-token-value-123")
    # request logging (401s included) never writes the Authorization header; scrubbing of
    # anything that does slip into a message is covered in events/tests/test_logs.py
    assert token not in caplog.text and "wrong-token-value-123" not in caplog.text
    # nor is it kept in clear: the database holds its SHA-256 only
    [stored] = ApiToken.objects.values_list("key_hash", flat=True)
    assert stored == ApiToken.hash_key(token) and stored != token
