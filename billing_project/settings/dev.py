"""Local development: works with nothing set in the environment."""

from .base import *  # noqa: F403
from .base import derive, env

DEBUG = env.bool("DEBUG", default=True)
# `make run` on moto (or ministack killed rather than stopped) loses queued messages on a restart:
# locally the delivery audit looks every minute and re-sends what two quiet minutes left unhandled.
DELIVERY_AUDIT_INTERVAL_SECONDS = env.int("DELIVERY_AUDIT_INTERVAL_SECONDS", default=60)
DELIVERY_AUDIT_GRACE_SECONDS = env.int("DELIVERY_AUDIT_GRACE_SECONDS", default=120)

derive(globals())  # last: names and formats from this module's values
