"""messaging_status: one screen, and an exit status a monitor can act on."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from events import contracts
from events.operations.observations import queue_stats
from events.publishing.outbox import record_event
from tests.factories import AUDIT_QUEUE, agreement_data, envelope, send

pytestmark = pytest.mark.django_db(transaction=True)


def test_all_clear_exits_zero_and_lists_every_queue_and_dlq(empty_queues, capsys):
    call_command("messaging_status")
    out = capsys.readouterr().out
    for q in empty_queues.queues:
        assert q.name in out and q.dlq_name in out
    assert "outbox: 0 unpublished" in out
    assert "OK: all" in out and "checks pass" in out


def test_a_message_in_a_dlq_is_a_breach_with_exit_status_2(empty_queues, sqs, capsys):
    send(sqs, [json.dumps(envelope("x"))], queue=AUDIT_QUEUE + "-dlq")
    with pytest.raises(CommandError) as exc:
        call_command("messaging_status")
    assert exc.value.returncode == 2
    assert f"BREACH: dlq_not_empty: 1 message(s) in ['{AUDIT_QUEUE}-dlq']" in capsys.readouterr().out


def test_an_old_unpublished_outbox_row_is_a_breach(empty_queues, settings, capsys):
    settings.MONITOR_OUTBOX_MAX_AGE_SECONDS = 0
    with transaction.atomic():
        record_event(
            sender=None,
            type=contracts.AGREEMENT_CREATED,
            aggregate_id="o",
            aggregate_version=1,
            data=agreement_data("o"),
        )
    with pytest.raises(CommandError):
        call_command("messaging_status", "--no-age")
    out = capsys.readouterr().out
    assert "outbox: 1 unpublished" in out and "BREACH: outbox_lagging: 1 unpublished event(s), oldest" in out


def test_a_deleted_queue_is_reported_missing_not_a_crash(empty_queues, delete_queue, client, capsys):
    # given a task queue deleted under the running system (its URL already looked up and cached)
    call_command("messaging_status", "--no-age")
    capsys.readouterr()
    delete_queue("billing-test-celery-payments")
    # then the status still lists every queue, marks that one, and exits 2
    stats = {q.name: q for q in queue_stats()}
    assert stats["billing-test-celery-payments"].missing and not stats["billing-test-celery-default"].missing
    with pytest.raises(CommandError) as exc:
        call_command("messaging_status")
    assert exc.value.returncode == 2
    out = capsys.readouterr().out
    assert "billing-test-celery-payments                     MISSING: run messaging_provision" in out
    assert "BREACH: queues_missing: 1 queue(s) do not exist: billing-test-celery-payments" in out
    for q in empty_queues.queues:
        assert q.name in out and q.dlq_name in out
    # and so does the Messaging page
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_user("ops", is_staff=True))
    page = client.get("/admin/messaging/")
    assert page.status_code == 200
    assert b'queue-missing" data-queue="billing-test-celery-payments"' in page.content
