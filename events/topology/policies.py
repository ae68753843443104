"""The SQS queue policy of a consumer queue: who may send to it.

Only two kinds of sender have a reason to put a message straight into a consumer queue: the
project's SNS topics (every live event) and the operator tooling (``events_replay --to-queue``,
``dlq_redrive`` and their admin actions). Anyone else with ``sqs:SendMessage`` could post a forged
event that a handler would act on, so the policy denies it to everyone but those two:

- Allow ``sqs:SendMessage`` to ``sns.amazonaws.com`` when ``aws:SourceArn`` is one of the queue's
  topics (SNS needs this Allow: it is a service principal, not an IAM identity of the account).
- Deny ``sqs:SendMessage`` to ``*`` unless ``aws:SourceArn`` is one of the topics or
  ``aws:PrincipalArn`` matches ``OPERATOR_PRINCIPAL_ARNS``. Both conditions are negated operators
  (ArnNotEquals, ArnNotLike), which AWS evaluates as true when the key is absent from the request:
  an IAM caller has no ``aws:SourceArn`` and SNS has no ``aws:PrincipalArn``. The two are ANDed, so
  the Deny applies only when neither sender matches. An explicit Deny wins over any identity policy,
  so even an account administrator's role cannot send unless it is listed.

SendMessageBatch is authorized as ``sqs:SendMessage``, so the one action covers both. moto does
not evaluate queue policies; on a local endpoint this document is stored and compared only.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from . import aws


def queue_policy(queue: str, topics: list[str]) -> dict[str, Any]:
    """The policy document of consumer queue ``queue`` (full name) fed by ``topics`` (full names)."""
    topic_arns = [aws.topic_arn(t) for t in topics]
    queue_arn = aws.queue_arn(queue)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowBillingTopics",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arns}},
            },
            {
                "Sid": "DenyOtherSenders",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": _deny_unless(topic_arns, list(settings.OPERATOR_PRINCIPAL_ARNS)),
            },
        ],
    }


def _deny_unless(topic_arns: list[str], operators: list[str]) -> dict[str, Any]:
    condition: dict[str, Any] = {"ArnNotEquals": {"aws:SourceArn": topic_arns}}
    if operators:  # none listed: only the topics may send (replay/redrive to the queue are refused)
        condition["ArnNotLike"] = {"aws:PrincipalArn": operators}
    return condition
