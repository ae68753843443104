"""The Celery application: broker is SQS (kombu's transport), config from Django settings."""

import logging
import os
from typing import Any

import psycopg2
from celery import Celery, states
from celery.signals import task_postrun, task_prerun, worker_init
from django.db import close_old_connections, connections
from psycopg2.extensions import TRANSACTION_STATUS_IDLE

from billing_project import kombu_fixes

logger = logging.getLogger(__name__)
kombu_fixes.apply()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_project.settings.dev")

app = Celery("billing_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _register_worker_extensions() -> None:
    from click import Option

    from events.consuming.bootsteps import EventConsumersStep

    app.user_options["worker"].add(
        Option(
            ["--event-consumers"],
            default=None,
            help="Push-mode event consumers this worker runs: all, none, or e.g. invoicing,payments "
            "(default: the EVENT_CONSUMERS_IN_WORKER setting).",
        )
    )
    app.steps["worker"].add(EventConsumersStep)


_register_worker_extensions()


@worker_init.connect(weak=False)
def warm_aws_models(**_: Any) -> None:
    """Parse botocore's service models in the worker's main process, before it forks its pool: each
    child's first SNS, SQS or STS client then costs 11-25 ms instead of 50-70 (events/topology/aws.py)."""
    from events.topology import aws  # the apps' modules load after this module

    aws.warm()


@task_prerun.connect(weak=False)
def before_task(task: Any = None, **_: Any) -> None:
    """Close this thread's database connections that are past CONN_MAX_AGE or broken: the task's
    first query opens a fresh one (with CONN_HEALTH_CHECKS, one the server dropped meanwhile is
    found by a ping, not by the task's first statement failing). What Django does around a web
    request; Celery's fixup would close them all (CELERY_DB_REUSE_MAX, in the settings)."""
    if not _eager(task):
        close_old_connections()


@task_postrun.connect(weak=False)
def after_task(task: Any = None, state: str | None = None, **_: Any) -> None:
    """After a task that failed or is retried, close its connections outright, and with them
    whatever it left in the session, as it did when every task closed. After one that succeeded,
    the same as before a task; then a connection kept that the task left holding a lock or a
    transaction is closed too (and logged): the next task on this thread starts on a session of
    its own."""
    if _eager(task):
        return
    if state != states.SUCCESS:
        connections.close_all()
        return
    close_old_connections()  # past its age, or broken (a dropped one is not looked into)
    for conn in connections.all(initialized_only=True):
        left = _left_in_session(conn) if conn.connection is not None else ""
        if left:
            name = getattr(task, "name", task)
            logger.error("task %s succeeded but left %s in its database session: closed", name, left)
            conn.close()


# What a task could leave in a session that the next task on it would inherit: PostgreSQL's
# advisory locks are re-entrant per session (a leaked relay lock would let only this thread relay,
# for good), and a cursor would hold its snapshot. One round trip (about 0.3 ms of the database's
# CPU), against a new backend per task (bench/task_connection.py). Session-wide SETs are not
# looked for (scanning pg_settings costs 1 ms a task): tasks use SET LOCAL or set_config(..., true).
_LEFT_BEHIND = """
SELECT concat_ws(', ',
    CASE WHEN EXISTS (SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory')
         THEN 'an advisory lock' END,
    CASE WHEN EXISTS (SELECT 1 FROM pg_cursors) THEN 'an open cursor' END)
"""


def _left_in_session(conn: Any) -> str:
    """What ``conn``'s session holds that the next task would inherit (empty: nothing). Checked
    without a round trip first: a transaction still open."""
    raw = conn.connection
    try:
        if raw.get_transaction_status() != TRANSACTION_STATUS_IDLE:
            return "an open transaction"
        with raw.cursor() as cur:
            cur.execute(_LEFT_BEHIND)
            return cur.fetchone()[0]
    except psycopg2.Error as exc:
        return f"a connection that failed a check ({type(exc).__name__})"


def _eager(task: Any) -> bool:
    return bool(getattr(getattr(task, "request", None), "is_eager", False))
