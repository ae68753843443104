"""System checks: catch settings that would silently break delivery guarantees."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register

from . import contracts, topology
from .consuming.registry import HANDLERS
from .publishing import sns
from .topology import aws


@register("billing")
def check_messaging_settings(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    errors: list[Error | Warning] = []
    longest = settings.CELERY_TASK_TIME_LIMIT + settings.CELERY_MAX_COUNTDOWN
    if settings.CELERY_VISIBILITY_TIMEOUT <= longest:
        errors.append(
            Error(
                f"CELERY_VISIBILITY_TIMEOUT ({settings.CELERY_VISIBILITY_TIMEOUT}s) must exceed the "
                f"longest task plus countdown ({longest}s), or SQS redelivers running tasks.",
                id="billing.E001",
            )
        )
    if settings.MESSAGING_DLQ_RETENTION_SECONDS <= settings.MESSAGING_RETENTION_SECONDS:
        errors.append(
            Error(
                "MESSAGING_DLQ_RETENTION_SECONDS must be longer than MESSAGING_RETENTION_SECONDS: "
                "SQS keeps a message's original enqueue time when it moves to the DLQ.",
                id="billing.E002",
            )
        )
    if settings.MESSAGING_MAX_RECEIVE_COUNT < 1:
        errors.append(Error("MESSAGING_MAX_RECEIVE_COUNT must be at least 1.", id="billing.E003"))
    broker_prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("queue_name_prefix", "")
    if broker_prefix != f"{settings.RESOURCE_PREFIX}celery-":
        errors.append(
            Error(
                f"The broker's queue_name_prefix {broker_prefix!r} is not RESOURCE_PREFIX + 'celery-' "
                f"({settings.RESOURCE_PREFIX!r}): workers would use queues messaging_provision never "
                "made (no DLQ). Call settings.base.derive(globals()) last in the settings module.",
                id="billing.E004",
            )
        )
    for net in settings.METRICS_TRUSTED_SCRAPERS:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            errors.append(
                Error(f"METRICS_TRUSTED_SCRAPERS: {net!r} is not an IP address or CIDR.", id="billing.E005")
            )
    for arn in settings.OPERATOR_PRINCIPAL_ARNS:
        if not arn.startswith("arn:") or ":iam::" not in arn:
            errors.append(
                Error(
                    f"OPERATOR_PRINCIPAL_ARNS: {arn!r} is not an IAM principal ARN "
                    "(e.g. arn:aws:iam::123456789012:role/billing-operator).",
                    id="billing.E006",
                )
            )
    if settings.AWS_MAX_ATTEMPTS < 1:
        errors.append(
            Error(
                f"AWS_MAX_ATTEMPTS ({settings.AWS_MAX_ATTEMPTS}) must be at least 1: the tries of each "
                "AWS call, the first included (1: no retry).",
                id="billing.E012",
            )
        )
    else:  # (the idle timeout's check and the relay task's count the tries)
        errors += _relay_idle_timeout()
        errors += _relay_task_time()
    errors += _delivery_audit_settings()
    return errors


# PostgreSQL's idle timeouts are milliseconds in a 32-bit integer.
MAX_IDLE_TIMEOUT_SECONDS = 2_147_483
MIN_PUBLISH_SECONDS = sns.MIN_PUBLISH_SECONDS  # the least a relay pass may publish for, and a hold wait


def _relay_idle_timeout() -> list[Error]:
    """A relay's session waits idle while its pass publishes (sns.publish_seconds, then the last
    call started) and while it holds for a deep queue; ended then, the pass's marks are lost."""
    idle = settings.OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS
    longest = aws.longest_call_seconds()
    least = longest + 2 * max(MIN_PUBLISH_SECONDS, settings.OUTBOX_RELAY_HOLD_MAX_SECONDS)
    if idle == 0 or least <= idle <= MAX_IDLE_TIMEOUT_SECONDS:
        return []
    return [
        Error(
            f"OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS ({idle}s) must be 0 (never) or from {least:.0f}s to "
            f"{MAX_IDLE_TIMEOUT_SECONDS}s: the longest publishing call ({longest:.0f}s: AWS_MAX_ATTEMPTS "
            "tries of AWS_CONNECT_TIMEOUT + AWS_READ_TIMEOUT, a direct call's own, the waits between "
            "them), and twice a pass's least publishing time or a hold's OUTBOX_RELAY_HOLD_MAX_SECONDS, "
            "or a relay's session is ended while it waits for a slow endpoint.",
            id="billing.E009",
        )
    ]


def _relay_task_time() -> list[Warning]:
    """A relay task starts passes for OUTBOX_RELAY_MAX_SECONDS, and each pass starts calls for as
    long as its task's soft time limit leaves after the longest call (sns.task_publish_seconds);
    under MIN_PUBLISH_SECONDS left, that bound is not applied."""
    left = sns.task_publish_seconds()
    if left >= MIN_PUBLISH_SECONDS:
        return []
    soft, passes = settings.CELERY_TASK_SOFT_TIME_LIMIT, settings.OUTBOX_RELAY_MAX_SECONDS
    why = (
        f"a relay task starts passes for OUTBOX_RELAY_MAX_SECONDS ({passes:g}s), longer than that"
        if passes >= soft
        else f"after OUTBOX_RELAY_MAX_SECONDS ({passes:g}s) of passes, the longest call "
        f"({aws.longest_call_seconds():.0f}s) and {sns.RELAY_END_MARGIN_SECONDS:g}s to mark its rows, "
        f"it leaves a relay task's last pass {max(left, 0.0):.1f}s to start calls in, under "
        f"{MIN_PUBLISH_SECONDS:g}s"
    )
    return [
        Warning(
            f"CELERY_TASK_SOFT_TIME_LIMIT ({soft}s) does not bound a relay task: {why}. So passes "
            "are not cut short for it, and a relay through a long backlog or on an endpoint that "
            "answers slowly can be stopped by the limit mid-pass: its task fails and the rows it "
            "published are published again (consumers take the duplicates as such).",
            hint="Raise CELERY_TASK_TIME_LIMIT (the soft limit is 30 s under it, half of it under "
            "60 s), or lower OUTBOX_RELAY_MAX_SECONDS or the AWS calls' timeouts (AWS_CONNECT_TIMEOUT, "
            "AWS_READ_TIMEOUT, AWS_MAX_ATTEMPTS).",
            id="billing.W013",
        )
    ]


def _delivery_audit_settings() -> list[Error]:
    errors = []
    for producer, conf in settings.DELIVERY_AUDIT_REMOTE_PRODUCERS.items():
        url = conf.get("url", "") if isinstance(conf, dict) else ""
        token = conf.get("token", "") if isinstance(conf, dict) else ""
        if producer not in topology.TOPICS or not url.startswith(("http://", "https://")) or not token:
            errors.append(
                Error(
                    f"DELIVERY_AUDIT_REMOTE_PRODUCERS[{producer!r}]: needs a producer among "
                    f"{list(topology.TOPICS)} and {{'url': 'https://.../api/events/', 'token': '...'}} "
                    "(a token from api_token_create on that service).",
                    id="billing.E007",
                )
            )
    consumers = {eq.consumer for eq in (*topology.EVENT_QUEUES, *settings.EXTRA_EVENT_QUEUES)}
    chosen = settings.DELIVERY_AUDIT_CONSUMERS.strip()
    unknown = [c.strip() for c in chosen.split(",") if c.strip() and c.strip() not in consumers]
    if chosen not in ("", "all") and unknown:
        errors.append(
            Error(
                f"DELIVERY_AUDIT_CONSUMERS names {unknown}, not consumers: "
                f"'all' or some of {sorted(consumers)}.",
                id="billing.E008",
            )
        )
    return errors


@register("billing")
def check_topology_matches_contracts(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Every subscribed event type is a known contract, produced on the topic subscribed to."""
    errors: list[Error] = []
    for eq in topology.EVENT_QUEUES:
        for topic, types in eq.subscriptions.items():
            for name in types:
                et = contracts.REGISTRY.get(name)
                if et is None:
                    errors.append(
                        Error(f"{eq.consumer} subscribes to unknown event type {name!r}", id="billing.E010")
                    )
                elif et.producer != topic:
                    errors.append(
                        Error(
                            f"{eq.consumer} subscribes to {name!r} on topic {topic!r}, "
                            f"but it is published on {et.producer!r}",
                            id="billing.E011",
                        )
                    )
    return errors


@register("billing")
def check_handlers_are_subscribed(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """A handler whose event type its consumer's queue does not subscribe to would never run."""
    subscribed: dict[str, set[str]] = {}
    for eq in (*topology.EVENT_QUEUES, *settings.EXTRA_EVENT_QUEUES):
        types = subscribed.setdefault(eq.consumer, set())
        for event_types in eq.subscriptions.values():
            types.update(event_types or {"*"})
    errors = []
    for consumer, handlers in HANDLERS.items():
        if consumer not in subscribed:
            errors.append(
                Error(
                    f"handlers registered for consumer {consumer!r}, which has no queue in "
                    "events/topology.py",
                    id="billing.E020",
                )
            )
            continue
        for event_type in handlers:
            if event_type not in subscribed[consumer] and "*" not in subscribed[consumer]:
                errors.append(
                    Error(
                        f"{consumer} handles {event_type!r} but its queue does not subscribe to it",
                        id="billing.E021",
                    )
                )
    return errors
