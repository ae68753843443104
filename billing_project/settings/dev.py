"""Local development: works with nothing set in the environment."""

from .base import *  # noqa: F403
from .base import derive, env

DEBUG = env.bool("DEBUG", default=True)
# `make run` on moto (or ministack killed rather than stopped) loses queued messages on a restart:
# locally the delivery audit looks every minute and re-sends what two quiet minutes left unhandled.
DELIVERY_AUDIT_INTERVAL_SECONDS = env.int("DELIVERY_AUDIT_INTERVAL_SECONDS", default=60)
DELIVERY_AUDIT_GRACE_SECONDS = env.int("DELIVERY_AUDIT_GRACE_SECONDS", default=120)
# The local emulators slow down as their queues deepen: the relay holds the topics that feed a
# consumer's queue while it is past 300 messages (events/publishing/holding.py; 10,000 agreements
# through bench/pipeline.py took 23.6-25.3 s held at 300 (28.0 s at 1,000, in a prototype),
# against 29.5-32.9 s unheld, alternating).
OUTBOX_RELAY_HOLD_DEPTH = env.int("OUTBOX_RELAY_HOLD_DEPTH", default=300)
# Push consumers on a trickle (events/consuming/push.py) wait 0.2 s after a thin long poll, so the
# next receive brings a batch: half the receives per message (events/tests/test_push_gathering.py).
# What CPU it saves did not show through a noisy machine's bench/pipeline.py (10,000 agreements:
# 185 against 200-211 cpu-s in one A/B, none in two others).
EVENT_CONSUMER_DEFAULTS = {**EVENT_CONSUMER_DEFAULTS, "gather_seconds": 0.2}  # noqa: F405

derive(globals())  # last: names and formats from this module's values
