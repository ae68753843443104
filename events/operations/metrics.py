"""Prometheus metrics of the event backbone (and the apps, which import from here).

Works in prometheus-client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR
is set (Celery prefork workers, several web processes); see events/views.py.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_RECORDED = Counter("billing_events_recorded_total", "Events written to the outbox", ["type"])
EVENTS_PUBLISHED = Counter("billing_events_published_total", "Events published to SNS", ["type"])
EVENTS_REPLAYED = Counter(
    "billing_events_replayed_total",
    "Events re-sent by replay (topic, queue) and the delivery audit (backfill)",
    ["target"],
)
AUDIT_MISSING = Gauge(
    "billing_delivery_audit_missing",
    "Events a consumer's last delivery audit found missing",
    ["consumer"],
    multiprocess_mode="max",
)
RELAY_FAILURES = Counter("billing_relay_failures_total", "Outbox rows whose publish attempt failed")
RELAY_NOT_SENT = Counter(
    "billing_relay_not_sent_total",
    "Outbox rows a relay pass claimed and left due, unsent: it ran out of its publishing time",
)
RELAY_LAG = Histogram(
    "billing_relay_lag_seconds",
    "Time from recording an event to its publication",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
EVENTS_HANDLED = Counter(
    "billing_events_handled_total",
    "Messages taken by a consumer, by outcome (handled, duplicate, unhandled_type, failed, rejected)",
    ["consumer", "type", "outcome"],
)
HANDLER_DURATION = Histogram(
    "billing_handler_duration_seconds",
    "Handler run time",
    ["consumer", "type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUEUE_DEPTH = Gauge(
    "billing_queue_messages", "Messages in a queue by state", ["queue", "state"], multiprocess_mode="max"
)
QUEUE_OLDEST_AGE = Gauge(
    "billing_queue_oldest_message_age_seconds",
    "Age of the oldest message",
    ["queue"],
    multiprocess_mode="max",
)
OUTBOX_BACKLOG = Gauge("billing_outbox_unpublished", "Unpublished outbox rows", multiprocess_mode="max")
OUTBOX_OLDEST_AGE = Gauge(
    "billing_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest unpublished row",
    multiprocess_mode="max",
)
INVOICES_ISSUED = Counter("billing_invoices_issued_total", "Invoices issued", ["currency"])
PAYMENTS = Counter("billing_payments_total", "Payment outcomes", ["outcome"])
DAILY_RUN_DURATION = Histogram(
    "billing_daily_run_duration_seconds",
    "Duration of the daily invoice run",
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
DAILY_RUN_LAST_SUCCESS = Gauge(
    "billing_daily_run_last_success_timestamp_seconds",
    "When the daily run last succeeded",
    multiprocess_mode="max",
)
