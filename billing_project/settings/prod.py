"""Production: real AWS (no AWS_ENDPOINT_URL), PostgreSQL, secrets from the environment.

Refuses to start without SECRET_KEY and DATABASE_URL, and passes
``manage.py check --deploy``.
"""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import derive, env

DEBUG = False
LOG_FORMAT = env.str("LOG_FORMAT", default="json")

try:
    SECRET_KEY = env.str("SECRET_KEY")
    env.str("DATABASE_URL")
except ImproperlyConfigured as exc:
    raise ImproperlyConfigured(
        f"{exc}. Production settings need SECRET_KEY (50+ random characters) and DATABASE_URL."
    ) from None
if len(SECRET_KEY) < 50 or SECRET_KEY.startswith("dev-insecure"):
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 random characters in production.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
# Behind a TLS proxy every request comes from the proxy's address (often loopback): trust none
# by default, so /metrics needs METRICS_TOKEN unless the scrapers' addresses are named.
METRICS_TRUSTED_SCRAPERS = env.list("METRICS_TRUSTED_SCRAPERS", default=[])
RESOURCE_PREFIX = env.str("RESOURCE_PREFIX", default="billing-prod-")
OPERATOR_COMMAND = env.str("OPERATOR_COMMAND", default="python manage.py {args}")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)  # noqa: F405

# Events are signed with a key only the project's services hold (events/signing.py).
try:
    EVENT_SIGNING_KEYS = env.json("EVENT_SIGNING_KEYS")
except ImproperlyConfigured:
    raise ImproperlyConfigured(
        'Production settings need EVENT_SIGNING_KEYS, e.g. {"2026-11": "<64 random characters>"}.'
    ) from None
if (
    not isinstance(EVENT_SIGNING_KEYS, dict)
    or not EVENT_SIGNING_KEYS
    or any(not isinstance(v, str) or len(v) < 32 for v in EVENT_SIGNING_KEYS.values())
):
    raise ImproperlyConfigured("EVENT_SIGNING_KEYS must map key ids to secrets of 32+ random characters.")
EVENT_SIGNING_KEY_ID = env.str("EVENT_SIGNING_KEY_ID", default=next(iter(EVENT_SIGNING_KEYS)))
if EVENT_SIGNING_KEY_ID not in EVENT_SIGNING_KEYS:
    raise ImproperlyConfigured(f"EVENT_SIGNING_KEY_ID {EVENT_SIGNING_KEY_ID!r} is not in EVENT_SIGNING_KEYS.")

derive(globals())  # last: names and formats from this module's values
