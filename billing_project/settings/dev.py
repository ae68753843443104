"""Local development: works with nothing set in the environment."""

from .base import *  # noqa: F403
from .base import derive, env

DEBUG = env.bool("DEBUG", default=True)

derive(globals())  # last: names and formats from this module's values
