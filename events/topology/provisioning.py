"""Create every SNS topic, SQS queue, DLQ and subscription of the topology, idempotently.

Reads what exists first and changes only what differs, so a second run changes
nothing and ``dry_run=True`` reports the same plan without writing. The same
code runs against moto's server and real AWS (only settings differ).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings

from . import aws
from .policies import queue_policy
from .resources import QueueSpec, SubscriptionSpec, Topology

CREATE, UPDATE, OK = "create", "update", "ok"


@dataclass(frozen=True)
class Change:
    action: str  # create | update | ok
    kind: str  # topic | queue | dlq | subscription | email
    name: str
    detail: str = ""

    def __str__(self) -> str:
        detail = f"  ({self.detail})" if self.detail else ""
        return f"{self.action:<7} {self.kind:<13} {self.name}{detail}"


def provision(topology: Topology, *, dry_run: bool = False) -> list[Change]:
    """Bring the endpoint in line with ``topology``; return what was (or would be) done."""
    return list(_Provisioner(topology, dry_run).run())


def summarize(changes: list[Change]) -> str:
    counts = {a: sum(1 for c in changes if c.action == a) for a in (CREATE, UPDATE, OK)}
    return f"{counts[CREATE]} to create, {counts[UPDATE]} to update, {counts[OK]} unchanged"


def _json_equal(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return not a and not b
    try:
        return _normalize(json.loads(a)) == _normalize(json.loads(b))
    except ValueError:
        return a == b


def _normalize(value: Any) -> Any:
    # AWS echoes numbers in policies as strings sometimes and reorders lists.
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((_normalize(v) for v in value), key=json.dumps)
    if isinstance(value, (int, float)):
        return str(value)
    return value


class _Provisioner:
    def __init__(self, topology: Topology, dry_run: bool) -> None:
        self.topology = topology
        self.dry_run = dry_run
        self.sns = aws.client("sns")
        self.sqs = aws.client("sqs")

    def run(self) -> Iterator[Change]:
        existing_topics = self._existing_topics()
        for name in self.topology.topics:
            if aws.topic_arn(name) in existing_topics:
                yield Change(OK, "topic", name)
            else:
                if not self.dry_run:
                    self.sns.create_topic(Name=name)
                yield Change(CREATE, "topic", name)
        for spec in self.topology.queues:
            yield self._queue(
                spec.dlq_name,
                {"MessageRetentionPeriod": str(spec.dlq_retention_seconds)},
                kind="dlq",
            )
            yield self._queue(spec.name, self._queue_attributes(spec), kind="queue")
        subs_by_topic: dict[str, dict[tuple[str, str], str]] = {}
        for sub in self.topology.subscriptions:
            if sub.topic not in subs_by_topic:
                subs_by_topic[sub.topic] = self._existing_subscriptions(sub.topic)
            yield self._subscription(sub, subs_by_topic[sub.topic])
        for topic, address in self.topology.email_subscriptions:
            if topic not in subs_by_topic:
                subs_by_topic[topic] = self._existing_subscriptions(topic)
            key = ("email", address)
            if key in subs_by_topic[topic]:
                yield Change(OK, "email", f"{topic} -> {address}")
            else:
                if not self.dry_run:
                    self.sns.subscribe(TopicArn=aws.topic_arn(topic), Protocol="email", Endpoint=address)
                yield Change(CREATE, "email", f"{topic} -> {address}", "recipient must confirm")

    # -- topics ------------------------------------------------------------
    def _existing_topics(self) -> set[str]:
        arns: set[str] = set()
        for page in self.sns.get_paginator("list_topics").paginate():
            arns.update(t["TopicArn"] for t in page.get("Topics", []))
        return arns

    # -- queues ------------------------------------------------------------
    def _queue_attributes(self, spec: QueueSpec) -> dict[str, str]:
        attrs = {
            "VisibilityTimeout": str(spec.visibility_timeout),
            "MessageRetentionPeriod": str(spec.retention_seconds),
            "RedrivePolicy": json.dumps(
                {
                    "deadLetterTargetArn": aws.queue_arn(spec.dlq_name),
                    "maxReceiveCount": spec.max_receive_count,
                }
            ),
        }
        topics = sorted({s.topic for s in self.topology.subscriptions if s.queue == spec.name})
        if topics:
            attrs["Policy"] = json.dumps(queue_policy(spec.name, topics))
        return attrs

    def _queue(self, name: str, desired: dict[str, str], *, kind: str) -> Change:
        try:
            url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in (
                "AWS.SimpleQueueService.NonExistentQueue",
                "QueueDoesNotExist",
            ):
                raise
            if not self.dry_run:
                self.sqs.create_queue(QueueName=name, Attributes=desired)
            return Change(CREATE, kind, name, self._describe(desired))
        current = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        differing = {
            key: value
            for key, value in desired.items()
            if not (
                _json_equal(current.get(key), value)
                if key in ("RedrivePolicy", "Policy")
                else current.get(key) == value
            )
        }
        if not differing:
            return Change(OK, kind, name)
        if not self.dry_run:
            self.sqs.set_queue_attributes(QueueUrl=url, Attributes=differing)
        return Change(UPDATE, kind, name, "set " + ", ".join(sorted(differing)))

    @staticmethod
    def _describe(attrs: dict[str, str]) -> str:
        parts = [f"visibility {attrs['VisibilityTimeout']}s"] if "VisibilityTimeout" in attrs else []
        parts.append(f"retention {int(attrs['MessageRetentionPeriod']) // 3600}h")
        if "RedrivePolicy" in attrs:
            policy = json.loads(attrs["RedrivePolicy"])
            parts.append(f"DLQ after {policy['maxReceiveCount']} receives")
        return ", ".join(parts)

    # -- subscriptions -----------------------------------------------------
    def _existing_subscriptions(self, topic: str) -> dict[tuple[str, str], str]:
        found: dict[tuple[str, str], str] = {}
        paginator = self.sns.get_paginator("list_subscriptions_by_topic")
        try:
            for page in paginator.paginate(TopicArn=aws.topic_arn(topic)):
                for s in page.get("Subscriptions", []):
                    found[(s["Protocol"], s["Endpoint"])] = s["SubscriptionArn"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "NotFound":
                raise  # NotFound: the topic is only planned (dry run)
        return found

    def _subscription(self, sub: SubscriptionSpec, existing: dict[tuple[str, str], str]) -> Change:
        label = f"{sub.topic} -> {sub.queue}"
        policy = sub.filter_policy()
        policy_json = json.dumps(policy) if policy else ""
        detail = f"filter event_type in {sorted(sub.event_types)}" if policy else "all events"
        arn = existing.get(("sqs", aws.queue_arn(sub.queue)))
        if arn is None:
            if not self.dry_run:
                attrs = {"RawMessageDelivery": "true"}
                if policy_json:
                    attrs["FilterPolicy"] = policy_json
                self.sns.subscribe(
                    TopicArn=aws.topic_arn(sub.topic),
                    Protocol="sqs",
                    Endpoint=aws.queue_arn(sub.queue),
                    Attributes=attrs,
                    ReturnSubscriptionArn=True,
                )
            return Change(CREATE, "subscription", label, f"raw delivery, {detail}")
        current = self.sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"]
        updates: dict[str, str] = {}
        if current.get("RawMessageDelivery", "false").lower() != "true":
            updates["RawMessageDelivery"] = "true"
        if not _json_equal(current.get("FilterPolicy") or None, policy_json or None):
            updates["FilterPolicy"] = policy_json
        if not updates:
            return Change(OK, "subscription", label)
        if not self.dry_run:
            for key, value in updates.items():
                self.sns.set_subscription_attributes(
                    SubscriptionArn=arn, AttributeName=key, AttributeValue=value
                )
        return Change(UPDATE, "subscription", label, "set " + ", ".join(sorted(updates)))


def alarm_specs(topology: Topology) -> list[dict[str, Any]]:
    """CloudWatch alarms: every DLQ not empty, every source queue's oldest message too old."""
    alerts_arn = aws.topic_arn(next(t for t in topology.topics if t.endswith("alerts")))
    specs = []
    for q in topology.queues:
        common = {
            "Namespace": "AWS/SQS",
            "Statistic": "Maximum",
            "Period": 60,
            "EvaluationPeriods": 1,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [alerts_arn],
            "OKActions": [alerts_arn],
        }
        specs.append(
            {
                **common,
                "AlarmName": f"{q.dlq_name}-not-empty",
                "AlarmDescription": f"Messages in the DLQ of {q.name}: inspect with dlq_inspect.",
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Dimensions": [{"Name": "QueueName", "Value": q.dlq_name}],
                "Threshold": float(settings.MONITOR_DLQ_MAX_DEPTH),
            }
        )
        specs.append(
            {
                **common,
                "AlarmName": f"{q.name}-oldest-message",
                "AlarmDescription": f"The oldest message in {q.name} waits too long: consumers running?",
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [{"Name": "QueueName", "Value": q.name}],
                "Threshold": float(settings.MONITOR_QUEUE_MAX_AGE_SECONDS),
            }
        )
    return specs


def provision_alarms(topology: Topology, *, dry_run: bool = False) -> list[Change]:
    """Create or update the CloudWatch alarms (PutMetricAlarm overwrites: idempotent)."""
    cloudwatch = aws.client("cloudwatch")
    specs = alarm_specs(topology)
    existing: dict[str, dict[str, Any]] = {}
    names = [s["AlarmName"] for s in specs]
    for i in range(0, len(names), 100):  # DescribeAlarms takes at most 100 names per call
        for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNames=names[i : i + 100]):
            existing.update({a["AlarmName"]: a for a in page.get("MetricAlarms", [])})
    changes = []
    for spec in specs:
        current = existing.get(spec["AlarmName"])
        same = current is not None and all(
            current.get(k) == spec[k]
            for k in ("MetricName", "Threshold", "ComparisonOperator", "AlarmActions")
        )
        if same:
            changes.append(Change(OK, "alarm", spec["AlarmName"]))
            continue
        if not dry_run:
            cloudwatch.put_metric_alarm(**spec)
        changes.append(
            Change(
                UPDATE if current else CREATE,
                "alarm",
                spec["AlarmName"],
                f"{spec['MetricName']} > {spec['Threshold']:g}",
            )
        )
    return changes
