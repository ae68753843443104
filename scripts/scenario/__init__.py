"""Scenario harness: a simulated billing history over the real parts, with faults, then invariants.

- ``harness``: the simulated calendar, the upstream and the operators, the settle (``run``);
- ``faults``: each fault the harness arms (late events, operator voids, hostile text, a connection
  killed mid-COPY, SIGKILLs, duplicates, poison...); ``loss``: a consumer queue losing its messages;
- ``oracle``: what the harness did (``Plan``), what it therefore expects, the invariants;
- ``fleet``: the worker and beat processes; ``__main__``: the soak's command line.

The CI version is tests/test_scenario.py (minutes). The soak: ``python -m scripts.scenario``.
"""

from .harness import FAULT_KINDS, Report, run
from .oracle import Plan, expected_periods

__all__ = ["FAULT_KINDS", "Plan", "Report", "expected_periods", "run"]
