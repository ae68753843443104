"""The periodic tasks exist after migrate, and an operator's edits in admin survive a re-sync."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

pytestmark = pytest.mark.django_db


def test_project_periodic_tasks_exist_after_migrate():
    names = set(PeriodicTask.objects.values_list("name", flat=True))
    assert {"Beat heartbeat", "Outbox relay sweep", "Event store pruning", "Daily invoice run"} <= names
    daily = PeriodicTask.objects.get(name="Daily invoice run")
    assert daily.task == "invoicing.issue_due_invoices" and daily.crontab.hour == "2"


def test_operator_edits_are_kept_unless_reset(capsys):
    PeriodicTask.objects.filter(name="Outbox relay sweep").update(enabled=False)
    call_command("periodic_tasks_sync")
    assert not PeriodicTask.objects.get(name="Outbox relay sweep").enabled
    call_command("periodic_tasks_sync", "--reset")
    assert PeriodicTask.objects.get(name="Outbox relay sweep").enabled


def test_pull_mode_consumer_gets_its_schedule(settings):
    settings.EVENT_CONSUMERS = {"payments": {"mode": "pull", "batch_size": 20, "interval_seconds": 5}}
    call_command("periodic_tasks_sync")
    task = PeriodicTask.objects.get(name="Pull consumer: payments")
    assert task.task == "events.pull_consumer" and task.interval.every == 5
