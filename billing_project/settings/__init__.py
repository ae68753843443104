"""Settings package: ``dev`` (default), ``test`` and ``prod`` build on ``base``."""
