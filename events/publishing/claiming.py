"""Which outbox rows a relay takes, and whether any are left: one statement each.

A claim reads the outbox by ranges of the index outbox_unpublished (priority, producer,
next_attempt_at, occurred_at): alerts' priority first, then each producer's rows by due time and
age, a different producer first every pass so that none waits behind another's backlog. One
ordered scan per range: a claim reads at most ``limit`` entries however deep the backlog, and none
of a producer left out (the relay's hold), whatever the planner's statistics say (an OR or a range
over producers there would sort the whole backlog instead; an empty range costs an index probe).

Both statements walk the ranges in one query, a LATERAL scan per range in their order (the
ranges are an array the nested loop reads in order; each range's scan locks a row only as the
statement takes it, so a claim that is full stops reading, and locks nothing more). They were a
query per range, built by the ORM: 8 ranges, two or three looks a relay pass, 25 statements a
pass, whose building was nine tenths of the relay's CPU while charges trickled in
(bench/pipeline.py, py-spy).

"Due" is judged by the database's clock, as ``next_attempt_at`` is stamped by it (the column's
default when a row is recorded, ``now()`` plus the backoff when a try fails): with each process's
own clock, a host running two minutes ahead hid its events from the relay its commit kicked (and
from every other relay) for those two minutes.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from typing import Any

from django.db import connection
from django.db.models import QuerySet

from .. import topology
from ..models import PRIORITIES, PRIORITY_ALERT, OutboxEvent

_turns = itertools.count()  # which producer's rows a pass takes first (each in turn)


def ranges(
    *,
    alerts_only: bool = False,
    producers: Collection[str] = (),
    skip_producers: Collection[str] = (),
    turn: int = 0,
) -> list[tuple[int, str]]:
    """The (priority, producer) ranges a claim reads, in its order: alerts' priority first (only
    that with ``alerts_only``), each producer of ``producers`` (default: every topic's) but those
    of ``skip_producers``, the ``turn``-th first. ``claim`` and ``due_rows_exist`` read the same
    ranges, so a row the one sees the other takes."""
    wanted = [p for p in producers or topology.TOPICS if p not in skip_producers]
    if wanted:
        turn %= len(wanted)
        wanted = wanted[turn:] + wanted[:turn]
    return [(priority, p) for priority in ((PRIORITY_ALERT,) if alerts_only else PRIORITIES) for p in wanted]


def never_claimed() -> QuerySet[OutboxEvent]:
    """Unpublished rows that no claim's ranges cover (a producer with no topic, or a priority a
    claim does not read: written around the contracts, by a raw insert or a retired producer).
    They wait for ever; the outbox's health check names them. (The ranges are every priority by
    every producer, so a row is covered when both its priority and its producer are.)"""
    pairs = ranges()
    return OutboxEvent.objects.filter(published_at__isnull=True).exclude(
        priority__in=list(dict.fromkeys(priority for priority, _ in pairs)),
        producer__in=list(dict.fromkeys(producer for _, producer in pairs)),
    )


def _each_range(columns: str, *, untried_only: bool, limit: str) -> str:
    """The statement's FROM: each range's due rows, oldest first, locked, skipping those locked."""
    table = OutboxEvent._meta.db_table
    untried = "AND e.attempts = 0 " if untried_only else ""
    return (
        "FROM unnest(%s::smallint[], %s::varchar[]) AS r(priority, producer) CROSS JOIN LATERAL ("
        f'SELECT {columns} FROM "{table}" AS e '
        "WHERE e.published_at IS NULL AND e.priority = r.priority AND e.producer = r.producer "
        f"AND e.next_attempt_at <= statement_timestamp() {untried}"
        f"ORDER BY e.next_attempt_at, e.occurred_at LIMIT {limit} FOR UPDATE SKIP LOCKED) AS o"
    )


def _params(pairs: list[tuple[int, str]]) -> list[Any]:
    return [[priority for priority, _ in pairs], [producer for _, producer in pairs]]


def claim(limit: int, *, alerts_only: bool, skip_producers: Collection[str]) -> list[OutboxEvent]:
    """Lock up to ``limit`` due rows, range after range (``ranges``, a different producer first
    each call), for the caller's transaction."""
    pairs = ranges(alerts_only=alerts_only, skip_producers=skip_producers, turn=next(_turns))
    if not pairs:
        return []
    return list(OutboxEvent.objects.raw(claim_sql(), [*_params(pairs), limit, limit]))


def claim_sql() -> str:
    """The claim's statement. Its ranges are read in order, and no row locked that it does not
    return, only while its plan is a nested loop over the ranges with no sort above the locks (an
    ORDER BY over the whole would read, and lock, every range: test_outbox.py checks the plan)."""
    return f"SELECT o.* {_each_range('*', untried_only=False, limit='%s')} LIMIT %s"


def due_rows_exist(
    *, untried_only: bool = False, producers: Collection[str] = (), skip_producers: Collection[str] = ()
) -> bool:
    """Whether a due row exists that a claim would take and no other session holds (a held one is
    its holder's to publish: looking again for it would only spin). ``untried_only``: after a
    failed pass, only rows never tried count, so a relay that just failed does not retry the
    endpoint at once (the failed rows wait for their backoff, and the sweep). ``producers``: only
    theirs count; ``skip_producers``: theirs do not. A probe per range (a plain EXISTS let the
    planner read the whole outbox: 86 ms at 400,000 rows, all published); a row no claim takes (a
    producer with no topic) would keep a relay looking."""
    pairs = ranges(producers=producers, skip_producers=skip_producers)
    if not pairs:
        return False
    sql = f"SELECT 1 {_each_range('', untried_only=untried_only, limit='1')} LIMIT 1"
    with connection.cursor() as cur:  # one statement: its locks go when it ends (outside a transaction)
        cur.execute(sql, _params(pairs))
        return cur.fetchone() is not None
