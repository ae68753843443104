"""Consumer queue policies: only the project's topics and the operators may send (issue 13)."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from events import topology
from events.topology import aws
from events.topology.provisioning import UPDATE, provision

pytestmark = pytest.mark.django_db

OPERATOR = "arn:aws:iam::123456789012:role/billing-operator"


def _policy(sqs, queue: str) -> dict:
    attrs = sqs.get_queue_attributes(QueueUrl=aws.queue_url(queue), AttributeNames=["Policy"])["Attributes"]
    return json.loads(attrs["Policy"])


def test_consumer_queue_policy_denies_senders_other_than_its_topics_and_the_operators(
    provisioned, sqs, settings, capsys
):
    settings.OPERATOR_PRINCIPAL_ARNS = [OPERATOR, "arn:aws:iam::123456789012:role/billing-web-*"]
    try:
        # when provisioning runs with operator principals configured
        changes = provision(topology.build())
        consumer_queues = sorted({s.queue for s in provisioned.subscriptions})
        assert sorted(c.name for c in changes if c.action == UPDATE) == consumer_queues
        assert {c.detail for c in changes if c.action == UPDATE} == {"set Policy"}
        # then each consumer queue's stored policy allows its topics (SNS) and denies anyone else
        invoicing = topology.event_queue_name("invoicing")
        allow, deny = _policy(sqs, invoicing)["Statement"]
        topics = sorted(aws.topic_arn(topology.topic_name(t)) for t in ("agreements", "payments"))
        assert allow["Effect"] == "Allow" and allow["Principal"] == {"Service": "sns.amazonaws.com"}
        assert sorted(allow["Condition"]["ArnEquals"]["aws:SourceArn"]) == topics
        assert deny == {
            "Sid": "DenyOtherSenders",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sqs:SendMessage",
            "Resource": aws.queue_arn(invoicing),
            "Condition": {
                "ArnNotEquals": {"aws:SourceArn": topics},
                "ArnNotLike": {"aws:PrincipalArn": settings.OPERATOR_PRINCIPAL_ARNS},
            },
        }
        # and a second run changes nothing
        call_command("messaging_provision")
        assert "0 to create, 0 to update" in capsys.readouterr().out.splitlines()[-1]
    finally:
        settings.OPERATOR_PRINCIPAL_ARNS = []
        provision(topology.build())


def test_without_operator_principals_only_the_topics_may_send(provisioned, sqs):
    deny = _policy(sqs, topology.event_queue_name("payments"))["Statement"][1]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert deny["Condition"] == {
        "ArnNotEquals": {"aws:SourceArn": [aws.topic_arn(topology.topic_name("invoicing"))]}
    }


def test_a_malformed_operator_arn_is_refused_at_startup(settings):
    from events.checks import check_messaging_settings

    settings.OPERATOR_PRINCIPAL_ARNS = [OPERATOR]
    assert "billing.E006" not in [e.id for e in check_messaging_settings()]
    settings.OPERATOR_PRINCIPAL_ARNS = ["billing-operator"]
    assert "billing.E006" in [e.id for e in check_messaging_settings()]
