"""Test run: PostgreSQL from DATABASE_URL and the moto server the test run starts."""

from .base import *  # noqa: F403
from .base import env

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
RESOURCE_PREFIX = env.str("RESOURCE_PREFIX", default="billing-test-")
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Tests run the relay explicitly; the on-commit kick is enabled where a test is about it.
OUTBOX_KICK_RELAY = False
