"""Small helpers for tests that wait on real workers and queues."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, connections

from devsupport.waiting import wait_until as devsupport_wait_until


def wait_until(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy (devsupport's rule); fail the test on timeout."""
    try:
        return devsupport_wait_until(check, timeout, f"condition {check}", interval=interval)
    except TimeoutError as exc:
        pytest.fail(str(exc))


ROOT = Path(__file__).resolve().parent.parent


def ctrl_c_at_progress(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Ctrl-C in a command, mid-run: its ``n``-th progress step (core.commands.progress_bar, shown
    or not) raises KeyboardInterrupt, as the signal would between two steps of work."""
    from tqdm import tqdm

    steps = 0
    update = tqdm.update

    def step_then_ctrl_c(self: tqdm, k: int = 1) -> bool | None:
        nonlocal steps
        steps += 1
        if steps == n:
            raise KeyboardInterrupt
        return update(self, k)

    monkeypatch.setattr(tqdm, "update", step_then_ctrl_c)


# A production environment that passes the settings' own checks (secrets are placeholders).
PROD_ENV = {
    "DJANGO_SETTINGS_MODULE": "billing_project.settings.prod",
    "SECRET_KEY": "x" * 20 + "-prod-secret-" + "y" * 30,
    "DATABASE_URL": "postgres://billing:pw@db.internal:5432/billing",
    "ALLOWED_HOSTS": "billing.example.com",
    "EVENT_SIGNING_KEYS": '{"2026-11": "' + "k" * 64 + '"}',
}


def terminate_backends(pids: set[int]) -> None:
    """End these PostgreSQL backends, as a failover or an administrator would, and wait until they
    are gone; from a connection of its own, since one of them may be this thread's."""
    other = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [list(pids)])

            def gone() -> bool:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)])
                return cur.fetchone()[0] == 0

            wait_until(gone, timeout=10)
    finally:
        other.close()


def database_url() -> str:
    """The test database as a DATABASE_URL, for worker and beat processes a test starts."""
    from django.db import connection

    s = connection.settings_dict
    host = (s["HOST"] or "127.0.0.1").replace("/", "%2F")
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{host}:{s['PORT'] or 5432}/{s['NAME']}"
