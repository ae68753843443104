"""Test run: PostgreSQL from DATABASE_URL and the moto server the test run starts."""

from .base import *  # noqa: F403
from .base import derive, env

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
RESOURCE_PREFIX = env.str("RESOURCE_PREFIX", default="billing-test-")
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Tests run the relay explicitly; the on-commit kick is enabled where a test is about it.
OUTBOX_KICK_RELAY = env.bool("OUTBOX_KICK_RELAY", default=False)
EVENTS_API_SETTLE_SECONDS = 0
CONSUMER_WAIT_SECONDS = 1
CONSUMER_RETRY_BASE_SECONDS = 0
# Task-only workers by default; push-consumer tests start the consumers they need.
EVENT_CONSUMERS_IN_WORKER = env.str("EVENT_CONSUMERS_IN_WORKER", default="none")

# A test-only consumer ("audit") with its own queue, to exercise the consumer machinery.
from events.topology import AGREEMENTS, EventQueue  # noqa: E402

INSTALLED_APPS = [*INSTALLED_APPS, "tests.auditapp"]  # noqa: F405
EXTRA_EVENT_QUEUES = [
    EventQueue("audit", {AGREEMENTS: ("agreement.created", "agreement.cancelled")}, visibility_timeout=5)
]
# Close connections after each handler/task so worker threads leave none behind.
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
PAYMENT_TRANSIENT_BACKOFF_SECONDS = 0
PAYMENT_RATE_LIMIT_PER_SECOND = 1000
# A task message that a worker took and lost (tests start and stop in-process workers many times,
# and a consumer stopped mid-receive keeps what it got) comes back after this, not after production's
# 20 minutes. Test tasks are short, so the production rule "visibility > longest task" is waived.
CELERY_VISIBILITY_TIMEOUT = 30
SILENCED_SYSTEM_CHECKS = ["billing.E001"]

derive(globals())  # last: names and formats from this module's values
