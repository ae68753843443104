"""Settings shared by every environment, read from the environment (12-factor).

Development works with nothing set; production (``prod.py``) refuses to start
without the secrets it needs. Every knob that differs between a laptop and AWS
is an environment variable documented in README.md.

Settings computed from others (names built from ``RESOURCE_PREFIX``, the log
formatter from ``LOG_FORMAT``) are set by ``derive()``, which every environment
module calls last, after its own defaults: computed here, they would keep the
base defaults whatever the environment module says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import environ
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

SECRET_KEY = env.str("SECRET_KEY", default="dev-insecure-secret-key-change-me")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "core",
    "events",
    "agreements",
    "invoicing",
    "payments",
]

MIDDLEWARE = [
    # First: load balancer and kubelet probes (plain HTTP, the pod IP as Host) are answered
    # before the SSL redirect and host validation could refuse them.
    "billing_project.middleware.HealthProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # The console's links are shown only to whom may open them (core/admin_tools.py).
    "core.admin_tools.ConsoleRequestMiddleware",
]

ROOT_URLCONF = "billing_project.urls"
WSGI_APPLICATION = "billing_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
# DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/billing. `make run`
# sets it to its embedded PostgreSQL (pgserver) when nothing is given.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/billing"),
}
# A Unix-socket directory may be given percent-encoded as the host
# (postgres://user@%2Fvar%2Frun%2Fpostgresql/db), as libpq URLs allow.
DATABASES["default"]["HOST"] = unquote(DATABASES["default"].get("HOST", ""))
# Persistent connections (health-checked before reuse): workers handle many messages.
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Connections outlive a request or a task: a server that vanished (a failover, a dropped NAT entry)
# is noticed within about a minute, idle (TCP keepalives) or mid-call (tcp_user_timeout: sent data
# unacknowledged), instead of the kernel's 2 hours or 15 minutes. libpq's parameters, ignored on
# a Unix socket.
for _key, _value in {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}.items():
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(_key, _value)
DATABASES["default"].setdefault("TEST", {})
DATABASES["default"]["TEST"].setdefault("NAME", env.str("TEST_DATABASE_NAME", default="test_billing"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- AWS (SNS and SQS) ----------------------------------------------------
# AWS_ENDPOINT_URL is the standard AWS SDK variable: set, every client talks to
# that endpoint (moto's server locally); unset, boto3 reaches real AWS through
# its normal credential chain (env, profile, instance role).
AWS_REGION = env.str("AWS_REGION", default=env.str("AWS_DEFAULT_REGION", default="us-east-1"))
AWS_ENDPOINT_URL: str | None = env.str("AWS_ENDPOINT_URL", default=None) or None
# Only used with a local endpoint, where any non-empty value is accepted.
AWS_LOCAL_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="testing")
AWS_LOCAL_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="testing")
# The calls every event makes (SQS ReceiveMessage, DeleteMessageBatch; SNS PublishBatch) sent
# without botocore's request pipeline, anything but a plain success sent again through botocore
# (events/topology/direct.py): half their client CPU. Unset: on with AWS_ENDPOINT_URL (the local
# endpoint it was measured and tested on), off against real AWS, where botocore makes every call.
AWS_DIRECT_CALLS: bool | None = env.bool("AWS_DIRECT_CALLS", default=None)
# Every client's timeouts (seconds) and tries per call, the first included (botocore's "standard"
# retry mode; until 2026-11-30 botocore's max_attempts, which counts retries: a try more).
AWS_CONNECT_TIMEOUT = env.float("AWS_CONNECT_TIMEOUT", default=5.0)
AWS_READ_TIMEOUT = env.float("AWS_READ_TIMEOUT", default=30.0)
AWS_MAX_ATTEMPTS = env.int("AWS_MAX_ATTEMPTS", default=3)

# Every topic and queue name starts with this, so several environments
# (staging, a developer's sandbox) can share one AWS account.
RESOURCE_PREFIX = env.str("RESOURCE_PREFIX", default="billing-dev-")

# --- Messaging topology knobs --------------------------------------------
# How many receives before SQS moves a message to its dead-letter queue.
MESSAGING_MAX_RECEIVE_COUNT = env.int("MESSAGING_MAX_RECEIVE_COUNT", default=5)
# Source queues keep messages 4 days (SQS default); DLQs keep them 14 days
# (the SQS maximum), longer than their source as the redrive contract needs.
MESSAGING_RETENTION_SECONDS = env.int("MESSAGING_RETENTION_SECONDS", default=4 * 24 * 3600)
MESSAGING_DLQ_RETENTION_SECONDS = env.int("MESSAGING_DLQ_RETENTION_SECONDS", default=14 * 24 * 3600)
# Event-consumer queues: how long a received message stays invisible while
# its handler runs; a handler that raises sees it again after this.
# Keep it well above (messages a poller holds / handler threads) x the slowest handler.
MESSAGING_EVENT_VISIBILITY_TIMEOUT = env.int("MESSAGING_EVENT_VISIBILITY_TIMEOUT", default=300)
# The events API shows events older than the oldest open transaction recording events, less this
# for the clocks of the hosts that stamp them (events/publishing/api.py, settled_before).
EVENTS_API_SETTLE_SECONDS = env.int("EVENTS_API_SETTLE_SECONDS", default=5)
# Event signing (events/signing.py): {"key id": "secret"}. Consumers accept every key listed (several
# during a rotation); EVENT_SIGNING_KEY_ID signs what the relay and the replay tools send. Production
# refuses to start without them; these defaults are for development and tests only.
EVENT_SIGNING_KEYS: dict[str, str] = env.json(
    "EVENT_SIGNING_KEYS", default={"dev-1": "dev-insecure-event-signing-key-change-me"}
)
EVENT_SIGNING_KEY_ID = env.str("EVENT_SIGNING_KEY_ID", default=next(iter(EVENT_SIGNING_KEYS), ""))
# IAM principals (ARNs, wildcards allowed) that may send straight to consumer queues besides the
# project's SNS topics: whoever runs events_replay --to-queue and dlq_redrive, and the web role if
# operators use the admin's replay/redrive. Everyone else is denied by the queue policy.
OPERATOR_PRINCIPAL_ARNS: list[str] = env.list("OPERATOR_PRINCIPAL_ARNS", default=[])
# SNS e-mail subscriptions on the alerts topic (real AWS: confirm by mail).
ALERT_EMAILS: list[str] = env.list("ALERT_EMAILS", default=[])

# --- Celery ---------------------------------------------------------------
# The longest task is bounded by CELERY_TASK_TIME_LIMIT; the SQS visibility
# timeout must exceed it plus the largest countdown/ETA we schedule inside the
# broker (retries with countdown are capped well below this).
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = max(CELERY_TASK_TIME_LIMIT - 30, CELERY_TASK_TIME_LIMIT // 2)
CELERY_MAX_COUNTDOWN = env.int("CELERY_MAX_COUNTDOWN", default=600)
CELERY_VISIBILITY_TIMEOUT = (
    CELERY_TASK_TIME_LIMIT + CELERY_MAX_COUNTDOWN + env.int("CELERY_VISIBILITY_MARGIN", default=300)
)


def sqs_broker_url(endpoint_url: str | None, key: str, secret: str) -> tuple[str, bool]:
    """Kombu's SQS transport ignores AWS_ENDPOINT_URL: build ``sqs://key:secret@host:port``.

    Returns the URL and whether the endpoint uses TLS. With no endpoint the
    URL is bare ``sqs://`` so boto3's credential chain and region apply.
    """
    if not endpoint_url:
        return "sqs://", True
    parts = urlsplit(endpoint_url)
    if not parts.hostname:
        raise ValueError(f"AWS_ENDPOINT_URL={endpoint_url!r} has no host")
    port = f":{parts.port}" if parts.port else ""
    return f"sqs://{key}:{secret}@{parts.hostname}{port}", parts.scheme == "https"


_broker_url, _broker_secure = sqs_broker_url(
    AWS_ENDPOINT_URL, AWS_LOCAL_ACCESS_KEY_ID, AWS_LOCAL_SECRET_ACCESS_KEY
)
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=_broker_url)
# queue_name_prefix is added by derive(), once the environment module has set RESOURCE_PREFIX.
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
    "region": AWS_REGION,
    "is_secure": _broker_secure,
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    "wait_time_seconds": env.int("CELERY_SQS_WAIT_TIME_SECONDS", default=10),
    # kombu waits this long after a receive that brought nothing, and also whenever the worker's
    # prefetch slots (CELERY_WORKER_PREFETCH_MULTIPLIER = 1: one per process) are all taken: so
    # it spaces a busy worker's fetches too. At 0.5 s, 8 charging processes took 15-16 charges/s
    # from a full queue against a gateway allowing 100/s; at 0.1 s, 52-55/s (bench/pipeline.py).
    # An empty queue still costs one long poll (wait_time_seconds) per interval.
    "polling_interval": env.float("CELERY_SQS_POLLING_INTERVAL", default=0.1),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Task queues per workload, so slow payments never delay invoicing, and monitoring never waits
# behind bulk work (its own queue, served by a worker of its own). Every queue here is
# provisioned (with its DLQ) by `manage.py messaging_provision`.
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = (
    Queue("default"),
    Queue("events"),
    Queue("invoicing"),
    Queue("payments"),
    Queue("monitoring"),
)
CELERY_TASK_ROUTES = {
    # Exact names win over the patterns below: operations never wait behind bulk work.
    "events.monitor": {"queue": "monitoring"},
    "events.messaging_chart": {"queue": "monitoring"},
    "events.delivery_audit": {"queue": "monitoring"},
    "events.*": {"queue": "events"},
    "invoicing.*": {"queue": "invoicing"},
    # A dispatch pass sends charges: it must not wait behind the charges it sent.
    "payments.dispatch_charges": {"queue": "default"},
    "payments.*": {"queue": "payments"},
}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes every database connection before and after each task (it no longer
# honours CONN_MAX_AGE: celery#9824 reverted that) unless this is set; then it closes them once
# every this many tasks a process, and billing_project/celery.py closes around each task only
# those past CONN_MAX_AGE, broken, or left holding a lock or a transaction, as Django does around a
# web request. A connection per task cost a new PostgreSQL backend each time: about 9 ms of the
# database's CPU and 1 ms of the worker's, more than a charge's own SQL (bench/task_connection.py).
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_TASK_ACKS_LATE = False  # opted into per task, only where idempotent
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_WORKER_ENABLE_REMOTE_CONTROL = False  # SQS has no broadcast
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# Logs: JSON lines in production (LOG_FORMAT=json), readable text in development. Every line about
# an event carries event_id, event_type, consumer and task_id; secrets are scrubbed (events/logs.py).
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "events.operations.logs.ContextFilter"}},
    "formatters": {
        "text": {
            "()": "events.operations.logs.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
        "json": {"()": "events.operations.logs.json_formatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]},
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        "werkzeug": {"level": "WARNING"},  # moto's server logs every API call
    },
}

# --- Periodic work ----------------------------------------------------------
HEARTBEAT_INTERVAL_SECONDS = env.int("HEARTBEAT_INTERVAL_SECONDS", default=60)

# --- Outbox, relay, event store ---------------------------------------------
OUTBOX_RELAY_BATCH_SIZE = env.int("OUTBOX_RELAY_BATCH_SIZE", default=500)  # rows per DB transaction
# PublishBatch calls in flight per relay (each of 10 events); boto3 clients are thread-safe.
OUTBOX_RELAY_PUBLISH_CONCURRENCY = env.int("OUTBOX_RELAY_PUBLISH_CONCURRENCY", default=4)
OUTBOX_RELAY_MAX_SECONDS = env.float("OUTBOX_RELAY_MAX_SECONDS", default=60.0)  # per relay task run
# Passes of a relay working through a backlog at once, each claiming its own rows, sharing those
# calls in flight: one lane's claim and mark overlap another's publishing (events/publishing/relay.py).
# A relay that may hold (OUTBOX_RELAY_HOLD_DEPTH) runs one: its consumers pace it, and a second
# lane's pass would take a held queue a pass further past the depth before the depths are read.
OUTBOX_RELAY_LANES = env.int("OUTBOX_RELAY_LANES", default=2)
# Hold the topics that feed a consumer's event queue deeper than this (0: never; events/publishing/
# holding.py): for a local emulator, which slows down as its queues deepen. Real SQS does not.
OUTBOX_RELAY_HOLD_DEPTH = env.int("OUTBOX_RELAY_HOLD_DEPTH", default=0)
OUTBOX_RELAY_HOLD_MAX_SECONDS = env.float("OUTBOX_RELAY_HOLD_MAX_SECONDS", default=5.0)  # per hold
OUTBOX_RETRY_BASE_SECONDS = env.int("OUTBOX_RETRY_BASE_SECONDS", default=2)
OUTBOX_RETRY_MAX_SECONDS = env.int("OUTBOX_RETRY_MAX_SECONDS", default=300)
OUTBOX_SWEEP_SECONDS = env.int("OUTBOX_SWEEP_SECONDS", default=10)
# A relay's database sessions are ended by PostgreSQL once idle this long (seconds; 0: never): a
# relay on a frozen host, or cut off, would otherwise hold the relay's lock, and the rows it
# claimed, until the server's TCP keepalive gave up on it (two hours by default), and no event is
# published meanwhile. A pass publishes for at most half of what it leaves beyond the longest
# call, then leaves the rest of its rows to the next pass (system check billing.E009).
OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS = env.int("OUTBOX_RELAY_IDLE_TIMEOUT_SECONDS", default=300)
# After each commit that recorded events, enqueue a relay run (coalesced).
OUTBOX_KICK_RELAY = env.bool("OUTBOX_KICK_RELAY", default=True)
# At most one such kick per process per this many seconds: commits in between share the next
# one (a relay run publishes every pending row). Without it a busy worker floods the queue.
OUTBOX_KICK_MIN_INTERVAL_SECONDS = env.float("OUTBOX_KICK_MIN_INTERVAL_SECONDS", default=0.5)
# And across processes: while a relay task sent less than this long ago has not started, no
# process sends another (a row in events_relaykick says so). Past it, that task is taken for lost.
OUTBOX_KICK_PENDING_SECONDS = env.float("OUTBOX_KICK_PENDING_SECONDS", default=30.0)
# A process on its way out (a command) sends its last kick, waiting at most this long in all
# for the broker; past it, the process exits and the periodic sweep publishes.
OUTBOX_KICK_FLUSH_SECONDS = env.float("OUTBOX_KICK_FLUSH_SECONDS", default=10.0)
EVENT_RETENTION_DAYS = env.int("EVENT_RETENTION_DAYS", default=90)
EVENT_PRUNE_BATCH_SIZE = env.int("EVENT_PRUNE_BATCH_SIZE", default=5000)

# --- Event consumers -----------------------------------------------------------
# Per consumer (its queue name in events/topology.py): mode push (a poller in
# every worker, like a Lambda trigger) or pull (a beat task taking at most
# batch_size messages every interval_seconds). Push: ``concurrency`` handler threads, fed by
# ``pollers`` threads that each receive (long polling) and settle on their own: a poller spends
# nearly all its time in its ReceiveMessage and DeleteMessageBatch calls, so two overlap those
# round trips (bench/batch_consumers.py, 3,000 messages on ministack, five alternating pairs, 2
# against 1: invoicing 60-70% of the plain loop against 43-62%, payment.succeeded 50-65% against
# 52-61%, payments 57-71% against 52-59%; on SQS, where a call takes 10-20 ms, a poller waits on
# its calls all the more), and
# ``gather_seconds`` (0 to 5; 0: off), a wait after a long poll that brought under half of what it
# asked for, so a trickle is received in batches (events/consuming/push.py). E.g.
# EVENT_CONSUMERS='{"payments": {"mode": "pull", "batch_size": 20, "interval_seconds": 5}}'
EVENT_CONSUMER_DEFAULTS = {
    "mode": "push",
    "batch_size": 50,
    "interval_seconds": 10,
    "concurrency": 4,
    "pollers": 2,
}
EVENT_CONSUMERS: dict[str, dict[str, object]] = env.json("EVENT_CONSUMERS", default={})
# Which push consumers a worker runs: "all", "none", or a list ("invoicing,payments");
# the worker option --event-consumers overrides it per worker.
EVENT_CONSUMERS_IN_WORKER = env.str("EVENT_CONSUMERS_IN_WORKER", default="all")
CONSUMER_WAIT_SECONDS = env.int("CONSUMER_WAIT_SECONDS", default=10)  # SQS long poll
# A failed handler's message becomes visible again after base * 2**(receives-1) seconds.
CONSUMER_RETRY_BASE_SECONDS = env.int("CONSUMER_RETRY_BASE_SECONDS", default=5)
CONSUMER_RETRY_MAX_SECONDS = env.int("CONSUMER_RETRY_MAX_SECONDS", default=300)
# A handler's statements and lock waits fail after this many seconds (0: no limit): a handler stuck
# on the database gives its thread back and its message comes back later.
CONSUMER_HANDLER_TIMEOUT_SECONDS = env.float("CONSUMER_HANDLER_TIMEOUT_SECONDS", default=60)
# Consumer queues added by settings (a new consumer, or a test's), same shape as topology.EventQueue.
EXTRA_EVENT_QUEUES: list[object] = []

# --- Monitoring thresholds (messaging_status exit code, automated checks) -------
MONITOR_DLQ_MAX_DEPTH = env.int("MONITOR_DLQ_MAX_DEPTH", default=0)
MONITOR_QUEUE_MAX_AGE_SECONDS = env.int("MONITOR_QUEUE_MAX_AGE_SECONDS", default=300)
# An outbox row unpublished this long is a lag (the relay normally publishes within a second, unless
# it holds for a deep consumer queue, OUTBOX_RELAY_HOLD_DEPTH, a local emulator's setting; the
# tail of a 100,000-event daily run at a plain PublishBatch loop's pace stays under it). With one
# monitoring interval on top, a stuck backlog is alerted within 2 minutes (bench/outbox_lag_alert.py).
MONITOR_OUTBOX_MAX_AGE_SECONDS = env.int("MONITOR_OUTBOX_MAX_AGE_SECONDS", default=90)
# messaging_status, the Messaging page and monitoring count the outbox backlog up to this many rows
# and say "more than N" beyond (with the planner's estimate), so none of them counts a big table.
OUTBOX_COUNT_LIMIT = env.int("OUTBOX_COUNT_LIMIT", default=10_000)
# How often beat counts the Messaging page's 30-day chart (a read of the event store).
MESSAGING_CHART_SECONDS = env.int("MESSAGING_CHART_SECONDS", default=300)
# How the Messaging page and messaging_status spell a repair's manage.py command ({args}: its
# arguments): beside `make run`, the `make manage` target finds the running stack.
OPERATOR_COMMAND = env.str("OPERATOR_COMMAND", default='make manage ARGS="{args}"')

# --- Delivery audit (events/audit/): every consumer proves it has every event ----------------
# How often beat audits every consumer (events_audit does the same on demand).
DELIVERY_AUDIT_INTERVAL_SECONDS = env.int("DELIVERY_AUDIT_INTERVAL_SECONDS", default=300)
# An event published (or re-sent by the audit) less than this long ago is in flight, not missing.
# Keep it above the longest backlog a consumer's queue holds in normal work (a daily run's
# invoice.issued at the consumer's pace): a queued event taken for missing is only re-sent (its
# consumer skips the copy), but it raises alert.delivery_gap.
DELIVERY_AUDIT_GRACE_SECONDS = env.int("DELIVERY_AUDIT_GRACE_SECONDS", default=900)
# At most this many missing events re-sent per consumer and pass (the rest on the next passes).
DELIVERY_AUDIT_MAX_RESEND = env.int("DELIVERY_AUDIT_MAX_RESEND", default=10_000)
# Whether beat's pass re-sends what is missing (false: it only reports and alerts).
DELIVERY_AUDIT_REPAIR = env.bool("DELIVERY_AUDIT_REPAIR", default=True)
# Which consumers beat audits here: "all" (every consumer queue of the topology) or a list, e.g.
# "invoicing,alerts_mail" when payments runs as a service of its own and audits itself.
DELIVERY_AUDIT_CONSUMERS = env.str("DELIVERY_AUDIT_CONSUMERS", default="all")
# Producers whose event store is another service's: the audit reads their events through that
# service's GET /api/events/ with a token (api_token_create there), e.g.
# DELIVERY_AUDIT_REMOTE_PRODUCERS='{"agreements": {"url": "https://agreements.internal/api/events/",
# "token": "..."}}'. Producers not listed share this database and are read in it directly.
DELIVERY_AUDIT_REMOTE_PRODUCERS: dict[str, dict[str, str]] = env.json(
    "DELIVERY_AUDIT_REMOTE_PRODUCERS", default={}
)
DELIVERY_AUDIT_API_TIMEOUT_SECONDS = env.float("DELIVERY_AUDIT_API_TIMEOUT_SECONDS", default=30.0)

# --- Billing ---------------------------------------------------------------------
# Dates (periods, the daily run's date) are in this time zone.
BILLING_TIME_ZONE = env.str("BILLING_TIME_ZONE", default="UTC")
# Agreements take ISO 4217 codes that are legal tender somewhere today (core/fields.py). Codes
# to accept besides, e.g. EXTRA_CURRENCIES=CUC,XAU for a withdrawn currency or a unit a contract
# still uses. Each must be three letters A-Z (the database's check); upper-cased here.
EXTRA_CURRENCIES: list[str] = [c.strip().upper() for c in env.list("EXTRA_CURRENCIES", default=[])]
# agreements_import makes its lines into agreements (parsed, checked, prepared to write) in this many
# processes of its own while it reads and writes (agreements/import_batch.py; --preparers per run);
# 0: in its reading thread. Measured on 2 cores, 100,000 rows (bench/pipeline.py, two pairs): alone
# 12.0-13.3 s with 2 against 14.5-19.0 s with 0; inside a running stack, whose workers already fill
# the cores, 31.2-33.9 against 24.7-30.0 s: the hand-over between processes costs about 40 us of
# CPU a row. So 0 unless the cores are idle.
AGREEMENTS_IMPORT_PREPARERS = env.int("AGREEMENTS_IMPORT_PREPARERS", default=0)
INVOICING_CHUNK_SIZE = env.int("INVOICING_CHUNK_SIZE", default=1000)  # agreements per chunk task
# More periods than this due at once for one agreement (a long outage, bad data): the
# agreement is flagged for an operator to approve in admin instead of being billed.
INVOICING_MAX_CATCHUP_PERIODS = env.int("INVOICING_MAX_CATCHUP_PERIODS", default=6)
INVOICE_DUE_DAYS = env.int("INVOICE_DUE_DAYS", default=14)
INVOICE_SERIES_FORMAT = env.str("INVOICE_SERIES_FORMAT", default="INV-{year}")
CREDIT_NOTE_SERIES_FORMAT = env.str("CREDIT_NOTE_SERIES_FORMAT", default="CN-{year}")
# A late event that changes what a period already billed owes is corrected at once (void and
# reissue, credit note); a period that started more than this many days ago is flagged for an
# operator instead (Admin -> Billable agreements -> "Approve correction").
INVOICING_MAX_CORRECTION_DAYS = env.int("INVOICING_MAX_CORRECTION_DAYS", default=60)
# The daily run's watchdog (beat, every INVOICING_WATCHDOG_SECONDS): a chunk marked running whose
# transaction is gone for this long lost its worker and is sent again, at most this many attempts.
INVOICING_WATCHDOG_SECONDS = env.int("INVOICING_WATCHDOG_SECONDS", default=30)
INVOICING_CHUNK_STALE_SECONDS = env.int("INVOICING_CHUNK_STALE_SECONDS", default=30)
INVOICING_CHUNK_MAX_ATTEMPTS = env.int("INVOICING_CHUNK_MAX_ATTEMPTS", default=8)
# A chunk's database errors (dropped connection, deadlock) are retried this many times, with backoff.
INVOICING_CHUNK_MAX_RETRIES = env.int("INVOICING_CHUNK_MAX_RETRIES", default=5)
# When beat starts the daily run (in BILLING_TIME_ZONE); operators can edit it in admin.
INVOICE_RUN_HOUR = env.int("INVOICE_RUN_HOUR", default=2)
INVOICE_RUN_MINUTE = env.int("INVOICE_RUN_MINUTE", default=0)

# --- Payments --------------------------------------------------------------------
# The adapter class and where it talks to. The sandbox (devsupport/sandbox_gateway.py) speaks the
# same HTTP protocol as HttpGateway; a real provider gets its own adapter class.
PAYMENT_GATEWAY = env.str("PAYMENT_GATEWAY", default="payments.gateway.HttpGateway")
PAYMENT_GATEWAY_URL = env.str("PAYMENT_GATEWAY_URL", default="http://127.0.0.1:8765")
PAYMENT_GATEWAY_API_KEY = env.str("PAYMENT_GATEWAY_API_KEY", default="")
PAYMENT_GATEWAY_TIMEOUT = env.float("PAYMENT_GATEWAY_TIMEOUT", default=10.0)
PAYMENT_RATE_LIMIT_PER_SECOND = env.float("PAYMENT_RATE_LIMIT_PER_SECOND", default=100.0)  # all workers
PAYMENT_DUNNING_DAYS: list[int] = [int(d) for d in env.list("PAYMENT_DUNNING_DAYS", default=["1", "3", "7"])]
PAYMENT_TRANSIENT_MAX_RETRIES = env.int("PAYMENT_TRANSIENT_MAX_RETRIES", default=6)
PAYMENT_TRANSIENT_BACKOFF_SECONDS = env.float("PAYMENT_TRANSIENT_BACKOFF_SECONDS", default=2.0)
PAYMENT_TRANSIENT_BACKOFF_MAX_SECONDS = env.float("PAYMENT_TRANSIENT_BACKOFF_MAX_SECONDS", default=300.0)
PAYMENT_RETRY_SWEEP_SECONDS = env.int("PAYMENT_RETRY_SWEEP_SECONDS", default=30)
# A dispatch pass (kicked after payments open) leases and sends due charges this many at a time,
# for at most this long before it hands over to a new pass.
PAYMENT_DISPATCH_BATCH = env.int("PAYMENT_DISPATCH_BATCH", default=500)
PAYMENT_DISPATCH_MAX_SECONDS = env.float("PAYMENT_DISPATCH_MAX_SECONDS", default=20.0)
# Charges sent together (a dispatch pass, the sweep) go this many to a task message: a worker pays
# a message's fetch, ack and task overhead once for them, not per charge, and has several of them at
# the gateway at once (PAYMENT_CHARGE_CONCURRENCY). A task starts its list's charges in turn for at
# most PAYMENT_CHARGES_TASK_SECONDS (a charge started is finished), then sends the rest on; by default
# 10 s or a third of the soft time limit, whichever is shorter (checked: payments/checks.py), so a
# list in progress, with its last charge's token wait (a fraction of a second at the default rate)
# and the gateway's timeout, ends within make run's 30 s stop grace and a deploy's warm shutdown.
PAYMENT_CHARGES_PER_TASK = env.int("PAYMENT_CHARGES_PER_TASK", default=10)
# A worker process has up to this many charges of its list at the gateway at once (threads that
# wait for the gateway's answer; the token waits and the database work stay on the task's thread
# and connection): at a gateway answering in 200 ms, one at a time is 5 charges/s per process.
PAYMENT_CHARGE_CONCURRENCY = env.int("PAYMENT_CHARGE_CONCURRENCY", default=10)
PAYMENT_CHARGES_TASK_SECONDS = env.float(
    "PAYMENT_CHARGES_TASK_SECONDS", default=min(10.0, CELERY_TASK_SOFT_TIME_LIMIT / 3)
)
# Charges queued ahead of the gateway: at most this many seconds of PAYMENT_RATE_LIMIT_PER_SECOND
# (60 s: 6,000 at 100/s). The rest stay due in the database, sent as the queue drains, so a big
# daily run never queues more than the workers take before a lease runs out (0: no bound).
PAYMENT_DISPATCH_AHEAD_SECONDS = env.float("PAYMENT_DISPATCH_AHEAD_SECONDS", default=60.0)
# A queued charge that has not started this long after it was due is enqueued again by the
# sweep (its message was lost). Longer than the charge queue's backlog at the gateway's pace.
PAYMENT_CHARGE_LEASE_SECONDS = env.int("PAYMENT_CHARGE_LEASE_SECONDS", default=900)
# A charge left "processing" this long (its worker died mid-charge) may be taken over.
PAYMENT_PROCESSING_STALE_SECONDS = env.int("PAYMENT_PROCESSING_STALE_SECONDS", default=120)
# Where local alert e-mails go (the alerts_mail consumer); SNS e-mail subscriptions use ALERT_EMAILS.
ALERT_MAIL_FROM = env.str("ALERT_MAIL_FROM", default="billing-alerts@localhost")
EMAIL_HOST = env.str("EMAIL_HOST", default="127.0.0.1")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)

# --- Metrics -----------------------------------------------------------------------
# /metrics answers a caller sending "Authorization: Bearer <METRICS_TOKEN>", or connecting from
# one of METRICS_TRUSTED_SCRAPERS (IPs or CIDRs; REMOTE_ADDR, so behind a proxy it is the proxy's:
# production trusts no address by default).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_TRUSTED_SCRAPERS: list[str] = env.list("METRICS_TRUSTED_SCRAPERS", default=["127.0.0.1", "::1"])
MONITOR_INTERVAL_SECONDS = env.int("MONITOR_INTERVAL_SECONDS", default=20)
MONITOR_DAILY_RUN_MAX_AGE_HOURS = env.int("MONITOR_DAILY_RUN_MAX_AGE_HOURS", default=26)
# A daily run still running after this long raises alert.daily_run_stuck.
MONITOR_DAILY_RUN_MAX_RUNNING_SECONDS = env.int("MONITOR_DAILY_RUN_MAX_RUNNING_SECONDS", default=3600)
MONITOR_PAYMENT_FAILURE_RATE = env.float("MONITOR_PAYMENT_FAILURE_RATE", default=0.2)
MONITOR_PAYMENT_MIN_OUTCOMES = env.int("MONITOR_PAYMENT_MIN_OUTCOMES", default=20)
# Charges due and sent to no worker this long, with room in the queue ahead of the gateway: no
# dispatch pass and no sweep runs (alert.charges_unsent).
MONITOR_CHARGES_UNSENT_MAX_AGE_SECONDS = env.int("MONITOR_CHARGES_UNSENT_MAX_AGE_SECONDS", default=300)
# A charge of a live payment that may have taken money (its answer lost, or one the gateway's
# protocol does not give) and that asking again with its key has not settled for this long
# (alert.charges_outcome_unknown): the payment is asked again with the same key, never a new one.
MONITOR_CHARGE_OUTCOME_UNKNOWN_SECONDS = env.int("MONITOR_CHARGE_OUTCOME_UNKNOWN_SECONDS", default=3600)


def derive(ns: dict[str, Any]) -> None:
    """Set the settings computed from others in ``ns`` (an environment module's ``globals()``).

    Call it last in every environment module. The check billing.E004 refuses to start if a
    module forgot (the broker would then use queues no one provisioned, without DLQs).
    """
    ns["CELERY_BROKER_TRANSPORT_OPTIONS"] = {
        **ns["CELERY_BROKER_TRANSPORT_OPTIONS"],
        "queue_name_prefix": f"{ns['RESOURCE_PREFIX']}celery-",
        "visibility_timeout": ns["CELERY_VISIBILITY_TIMEOUT"],
    }
    ns["LOGGING"]["handlers"]["console"]["formatter"] = ns["LOG_FORMAT"]
