"""Settings come from the environment; production refuses to start half-configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from billing_project.settings.base import sqs_broker_url
from tests.helpers import PROD_ENV, ROOT


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SECRET_KEY", "DATABASE_URL", "AWS_ENDPOINT_URL", "EVENT_SIGNING_KEYS")
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_check_deploy_without_warnings():
    result = _manage(PROD_ENV, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_to_start_without_secret_key():
    env = {k: v for k, v in PROD_ENV.items() if k != "SECRET_KEY"}
    result = _manage(env, "check")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_settings_refuse_to_start_without_event_signing_keys():
    env = {k: v for k, v in PROD_ENV.items() if k != "EVENT_SIGNING_KEYS"}
    result = _manage(env, "check")
    assert result.returncode != 0
    assert "EVENT_SIGNING_KEYS" in result.stderr
    weak = {**PROD_ENV, "EVENT_SIGNING_KEYS": '{"k1": "short"}'}
    result = _manage(weak, "check")
    assert result.returncode != 0 and "32+ random characters" in result.stderr


def test_development_settings_work_with_nothing_set():
    result = _manage({"DJANGO_SETTINGS_MODULE": "billing_project.settings.dev"}, "check")
    assert result.returncode == 0, result.stderr


def test_broker_url_is_built_from_the_aws_endpoint():
    assert sqs_broker_url("http://127.0.0.1:4566", "k", "s") == ("sqs://k:s@127.0.0.1:4566", False)
    assert sqs_broker_url("https://sqs.local.example:8443", "k", "s") == (
        "sqs://k:s@sqs.local.example:8443",
        True,
    )
    # unset: real AWS, boto3's credential chain, TLS
    assert sqs_broker_url(None, "k", "s") == ("sqs://", True)


# Prints every resource name one settings module leads to: topics, queues, DLQs, the broker's prefix.
NAMES_SCRIPT = """
import json, django
django.setup()
from django.conf import settings
from events import topology
t = topology.build()
print(json.dumps({
    "prefix": settings.RESOURCE_PREFIX,
    "names": [*t.topics, *(q.name for q in t.queues), *(q.dlq_name for q in t.queues)],
    "broker_prefix": settings.CELERY_BROKER_TRANSPORT_OPTIONS["queue_name_prefix"],
}))
"""


@pytest.mark.parametrize(
    "module, extra, prefix",
    [
        ("dev", {}, "billing-dev-"),
        ("test", {}, "billing-test-"),
        ("prod", PROD_ENV, "billing-prod-"),
        ("prod", {**PROD_ENV, "RESOURCE_PREFIX": "billing-staging-"}, "billing-staging-"),
    ],
)
def test_every_queue_and_topic_name_starts_with_the_environments_prefix(module, extra, prefix):
    # given a clean environment: nothing but what the module needs (no RESOURCE_PREFIX unless given)
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **extra}
    env["DJANGO_SETTINGS_MODULE"] = f"billing_project.settings.{module}"
    # when the settings module is loaded in its own process
    result = subprocess.run(
        [sys.executable, "-c", NAMES_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    # then every name, the Celery broker's included, carries that environment's prefix
    assert found["prefix"] == prefix
    assert found["broker_prefix"] == f"{prefix}celery-"
    assert len(found["names"]) >= 4 + 2 * 7
    assert [n for n in found["names"] if not n.startswith(prefix)] == []


def test_a_settings_module_that_forgot_derive_does_not_pass_the_checks(settings):
    from events.checks import check_messaging_settings

    assert "billing.E004" not in [e.id for e in check_messaging_settings()]
    settings.RESOURCE_PREFIX = "billing-prod-"  # set after the broker's prefix was derived
    assert "billing.E004" in [e.id for e in check_messaging_settings()]


@pytest.mark.parametrize(
    ("idle", "direct", "passes"),
    [
        (300, True, True),  # the defaults
        (0, True, True),  # never
        # 3 tries of (5 + 30 s), and 2 waits of up to 25 s: 155 s; and twice a pass's least 5 s
        (164, False, False),
        (165, False, True),
        (199, True, False),  # a direct call's own try first: 35 s more
        (200, True, True),
        (2_147_484, True, False),  # past PostgreSQL's largest: every relay would fail
    ],
)
def test_a_relay_idle_timeout_a_slow_endpoint_would_reach_does_not_pass_the_checks(
    settings, idle, direct, passes
):
    from events.checks import check_messaging_settings

    settings.AWS_DIRECT_CALLS, settings.OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS = direct, idle
    errors = [e for e in check_messaging_settings() if e.id == "billing.E009"]
    assert (not errors) == passes, errors
    if errors:
        least = 165 if not direct else 200
        assert f"must be 0 (never) or from {least}s to 2147483s" in errors[0].msg


def test_aws_max_attempts_under_one_does_not_pass_the_checks(settings):
    from events.checks import check_messaging_settings

    settings.AWS_MAX_ATTEMPTS = 0  # botocore's clients would all fail when made
    [error] = [e for e in check_messaging_settings() if e.id.startswith("billing.E01")]
    assert error.id == "billing.E012" and "must be at least 1" in error.msg
    settings.AWS_MAX_ATTEMPTS = 1
    assert "billing.E012" not in [e.id for e in check_messaging_settings()]


def test_a_charge_list_longer_than_half_the_soft_time_limit_does_not_pass_the_checks(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    from payments.checks import check_charge_settings

    # the default is within it, whatever the time limit
    assert check_charge_settings() == []
    settings.PAYMENT_CHARGES_TASK_SECONDS = settings.CELERY_TASK_SOFT_TIME_LIMIT
    [error] = check_charge_settings()
    assert error.id == "billing.E101" and "PAYMENT_CHARGES_TASK_SECONDS" in error.msg
    # and the operator is told the value that passes
    half = settings.CELERY_TASK_SOFT_TIME_LIMIT / 2
    assert f"PAYMENT_CHARGES_TASK_SECONDS to {half:g} or less" in error.hint
    with pytest.raises(SystemCheckError, match="billing.E101"):
        call_command("check")
    settings.PAYMENT_CHARGES_TASK_SECONDS = half + 0.5  # just over the margin
    assert [e.id for e in check_charge_settings()] == ["billing.E101"]
    settings.PAYMENT_CHARGES_TASK_SECONDS = half
    assert check_charge_settings() == []


@pytest.mark.parametrize(
    "name, code", [("PAYMENT_CHARGES_PER_TASK", "E102"), ("PAYMENT_CHARGE_CONCURRENCY", "E103")]
)
def test_a_charge_count_under_one_is_refused_with_the_value_and_the_way_back(settings, name, code):
    from payments.checks import check_charge_settings

    setattr(settings, name, 0)
    [error] = check_charge_settings()
    assert error.id == f"billing.{code}" and f"{name} is 0" in error.msg and "Unset it" in error.hint
    setattr(settings, name, 1)
    assert check_charge_settings() == []
