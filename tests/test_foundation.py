"""The foundation: real broker, real worker, real endpoint, idempotent provisioning."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.core.management import call_command

from events import topology
from events.models import Heartbeat
from events.tasks import heartbeat
from events.topology import aws
from events.topology.provisioning import OK, provision
from tests.helpers import wait_until


def _read_back(sqs: Any, sns: Any, topo: topology.Topology) -> dict[str, Any]:
    """What the endpoint holds for our topology, in a comparable form."""
    state: dict[str, Any] = {"topics": sorted(aws.topic_arn(t) for t in topo.topics), "queues": {}}
    for q in topo.queues:
        for name in (q.name, q.dlq_name):
            attrs = sqs.get_queue_attributes(QueueUrl=aws.queue_url(name), AttributeNames=["All"])[
                "Attributes"
            ]
            state["queues"][name] = {
                k: attrs.get(k)
                for k in ("VisibilityTimeout", "MessageRetentionPeriod", "RedrivePolicy", "Policy")
            }
    subs = []
    for t in topo.topics:
        for s in sns.list_subscriptions_by_topic(TopicArn=aws.topic_arn(t))["Subscriptions"]:
            attrs = sns.get_subscription_attributes(SubscriptionArn=s["SubscriptionArn"])["Attributes"]
            subs.append((t, s["Endpoint"], attrs.get("RawMessageDelivery"), attrs.get("FilterPolicy")))
    state["subscriptions"] = sorted(subs, key=str)
    return state


def test_provision_twice_changes_nothing_and_reads_back_the_same(provisioned, sqs, sns, capsys):
    # given the topology was provisioned once (session fixture)
    before = _read_back(sqs, sns, provisioned)

    # when provisioning runs again
    changes = provision(provisioned)

    # then nothing was created or updated, and the endpoint holds exactly the same
    assert {c.action for c in changes} == {OK}
    assert _read_back(sqs, sns, provisioned) == before
    # and every queue has a DLQ with a redrive policy and longer retention
    for q in provisioned.queues:
        attrs = before["queues"][q.name]
        redrive = json.loads(attrs["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == aws.queue_arn(q.dlq_name)
        assert int(redrive["maxReceiveCount"]) == 5
        assert int(before["queues"][q.dlq_name]["MessageRetentionPeriod"]) > int(
            attrs["MessageRetentionPeriod"]
        )
    # and every SQS subscription uses raw delivery
    assert before["subscriptions"] and all(s[2] == "true" for s in before["subscriptions"])
    # and celery's task queues are among them, with DLQs
    names = {q.name for q in provisioned.queues}
    for queue in ("default", "events", "invoicing", "payments"):
        assert f"billing-test-celery-{queue}" in names


def test_provision_dry_run_prints_plan_and_creates_nothing(settings, sqs, capsys, provisioned):
    # given a fresh prefix: nothing of it exists yet
    settings.RESOURCE_PREFIX = "billing-dryrun-"

    # when
    call_command("messaging_provision", "--dry-run")

    # then the plan lists creations and nothing was created
    out = capsys.readouterr().out
    assert "create  topic         billing-dryrun-agreements" in out
    assert "create  subscription  billing-dryrun-agreements -> billing-dryrun-invoicing-events" in out
    assert "Dry run:" in out
    queues = sqs.list_queues(QueueNamePrefix="billing-dryrun-").get("QueueUrls", [])
    assert queues == []


def test_provision_prints_what_it_changes_and_lists_the_unchanged_only_when_asked(provisioned, capsys):
    # when it runs on a topology that is all there (make run does this at every start)
    call_command("messaging_provision")
    out = capsys.readouterr().out.splitlines()
    # then it names the endpoint and sums up: nothing changed, nothing listed
    assert out[0].startswith("Provisioning ") and out[-1].startswith("Done: 0 to create, 0 to update, ")
    assert len(out) == 2
    # and with -v 2 it lists every resource it found unchanged
    call_command("messaging_provision", verbosity=2)
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ok ")]
    assert len(listed) == int(out[-1].split(", ")[-1].split()[0])
    assert any(line.endswith("billing-test-invoicing-events") for line in listed)


def _drain(sqs: Any, name: str, wait: int = 1) -> list[dict[str, Any]]:
    url = aws.queue_url(name)
    got: list[dict[str, Any]] = []
    while True:
        resp = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait, MessageAttributeNames=["All"]
        )
        msgs = resp.get("Messages", [])
        if not msgs:
            return got
        got.extend(msgs)
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
        )


def test_published_message_reaches_exactly_the_queues_its_filter_selects(empty_queues, sns, sqs):
    # when an agreement event and an invoice event are published to their topics
    for topic, event_type in (
        ("agreements", "agreement.created"),
        ("invoicing", "invoice.issued"),
        ("invoicing", "invoice.paid"),
    ):
        sns.publish(
            TopicArn=aws.topic_arn(topology.topic_name(topic)),
            Message=json.dumps({"type": event_type}),
            MessageAttributes={"event_type": {"DataType": "String", "StringValue": event_type}},
        )

    # then invoicing got only the agreement event, payments only invoice.issued (not invoice.paid)
    invoicing = _drain(sqs, topology.event_queue_name("invoicing"))
    payments = _drain(sqs, topology.event_queue_name("payments"))
    alerts = _drain(sqs, topology.event_queue_name("alerts_mail"), wait=0)
    assert [json.loads(m["Body"])["type"] for m in invoicing] == ["agreement.created"]
    assert [json.loads(m["Body"])["type"] for m in payments] == ["invoice.issued"]
    assert alerts == []
    # and raw delivery: the body is our message, not an SNS envelope
    assert "TopicArn" not in invoicing[0]["Body"]


def test_message_received_max_receive_count_times_lands_in_dlq(settings, empty_queues, sqs):
    # given a queue with a short visibility timeout (so redelivery is quick)
    name = topology.event_queue_name("payments")
    url = aws.queue_url(name)
    sqs.send_message(QueueUrl=url, MessageBody='{"poison": true}')

    # when it is received maxReceiveCount times without being deleted
    receives = 0
    deadline = time.monotonic() + 30
    while receives < settings.MESSAGING_MAX_RECEIVE_COUNT and time.monotonic() < deadline:
        msgs = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0, WaitTimeSeconds=1).get("Messages", [])
        receives += len(msgs)

    # then the next receive finds nothing and the message is in the DLQ
    assert receives == settings.MESSAGING_MAX_RECEIVE_COUNT
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", []) == []
    dlq = _drain(sqs, f"{name}-dlq")
    assert [m["Body"] for m in dlq] == ['{"poison": true}']


@pytest.mark.slow
def test_task_sent_through_sqs_runs_in_a_real_worker_and_writes_postgres(celery_worker):
    # when a task is sent through the SQS broker
    heartbeat.apply_async(kwargs={"name": "foundation-test"})

    # then a real worker ran it and its effect is in PostgreSQL
    beat = wait_until(lambda: Heartbeat.objects.filter(name="foundation-test").first(), timeout=30)
    assert beat.detail["task_id"]
    assert beat.detail["worker"]


def test_provision_alarms_on_every_dlq_and_queue_notifying_the_alerts_topic(provisioned, capsys):
    call_command("messaging_provision", "--alarms")
    call_command("messaging_provision", "--alarms")
    assert "0 to create, 0 to update" in capsys.readouterr().out.splitlines()[-1]
    alarms = {a["AlarmName"]: a for a in aws.client("cloudwatch").describe_alarms()["MetricAlarms"]}
    alerts = aws.topic_arn(topology.topic_name("alerts"))
    for q in provisioned.queues:
        dlq = alarms[f"{q.dlq_name}-not-empty"]
        assert dlq["MetricName"] == "ApproximateNumberOfMessagesVisible" and dlq["AlarmActions"] == [alerts]
        assert alarms[f"{q.name}-oldest-message"]["MetricName"] == "ApproximateAgeOfOldestMessage"


@pytest.mark.slow
def test_worker_keeps_consuming_after_the_sqs_endpoint_was_down(celery_worker):
    """kombu answers a failed ReceiveMessage with [] and then crashed the worker on it
    (billing_project/kombu_fixes.py); an endpoint outage must not take the workers with it."""
    from tests import plugin

    plugin.restart_endpoint(3)  # the worker's pollers hit a refused connection meanwhile
    time.sleep(2)
    assert celery_worker.blueprint.state == 1  # RUN: not stopped by an "Unrecoverable error"
    heartbeat.apply_async(kwargs={"name": "after-outage"})
    wait_until(lambda: Heartbeat.objects.filter(name="after-outage").exists(), timeout=60)
